//! Frame header parsing and encoding. PLACEHOLDER until the protocol core lands.
