//! Message assembly and close rules. PLACEHOLDER until the protocol core lands.
