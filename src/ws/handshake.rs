//! HTTP/1.1 upgrade handshake. PLACEHOLDER until the protocol core lands.
