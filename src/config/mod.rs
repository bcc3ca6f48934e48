//! JSON configuration. PLACEHOLDER until the config issue lands.
