//! Services connections are routed to. PLACEHOLDER.
