//! The input of the Lua host: one [`ServiceSpec`] per configured service.
//!
//! Owns the shape and the defaults of a service's settings as the host needs them; it never
//! reads files or JSON (the config module maps `lapps.json` onto this struct).

use std::path::PathBuf;

/// Wire protocol of a network service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Messages reach `onMessage` as they are.
    Raw,
    /// The CBOR request/response protocol (`lapps_proto`).
    LAppS,
}

/// Everything the host needs to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// `applications/NAME/NAME.lua`.
    pub app_file: PathBuf,
    /// Directories put on `package.path` (the app's own directory and the shared `lib/`).
    pub package_paths: Vec<PathBuf>,
    /// Parallel LuaJIT states, one thread each.
    pub instances: usize,
    /// True: not bound to the network; runs `init()` then `run()`.
    pub standalone: bool,
    /// Started by `Registry::start`; false: only by `Registry::start_service`.
    pub auto_start: bool,
    pub protocol: Protocol,
    /// Exact path the service answers at.
    pub request_target: String,
    pub max_inbound_message_size: usize,
    /// Host modules made global (`time`, `nap`, `bcast`) or Lua modules to `require` as globals.
    pub preload: Vec<String>,
    /// Services that must be running before this one.
    pub depends: Vec<String>,
    /// Bytes one Lua state may allocate (0: unlimited).
    pub memory_limit: usize,
    /// VM instructions one callback may run; `None` keeps the JIT on and has no budget
    /// (see docs/lua-api.md, "Limits": compiled traces never run count hooks).
    pub instruction_budget: Option<u64>,
    pub allow_ffi: bool,
    pub allow_debug: bool,
    /// Keep `os.execute` and `io.popen`.
    pub allow_os_execute: bool,
    /// High-water mark, in messages, of an instance's queue (back-pressure above it).
    pub queue_capacity: usize,
    /// High-water mark, in payload bytes, of an instance's queue.
    pub queue_bytes: usize,
    /// Capacity of an `mqr` queue this service creates without naming one.
    pub mqr_capacity: usize,
    /// Split outbound messages into frames of at most this many payload bytes.
    pub auto_fragment: Option<usize>,
    /// Extra header lines for the 101 answer.
    pub extra_headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Protocol` to answer with.
    pub proto_alias: Option<String>,
    /// LAppS protocol: consecutive malformed messages before the connection is closed (1003).
    pub max_protocol_errors: u32,
    /// How long loading the app and its `init()`/`onStart` may take before the start fails
    /// (a start that never ended would hold the server's start-up or a reload for good).
    pub start_timeout: std::time::Duration,
    /// Started beside a running version it is to replace (a redeploy): its instances' log
    /// lines are tagged `new version` until it serves.
    pub replacing: bool,
}

impl ServiceSpec {
    /// A spec for service `name` whose file is `app_file`, with defaults for specs built in
    /// code (tests, embedders): some are roomier than `lapps.json`'s (memory_limit 256 MiB,
    /// queue_capacity 4096), whose own defaults `Config` applies to every field it fills.
    pub fn new(name: impl Into<String>, app_file: impl Into<PathBuf>) -> ServiceSpec {
        let name = name.into();
        let app_file = app_file.into();
        let package_paths = app_file
            .parent()
            .map(|d| vec![d.to_path_buf()])
            .unwrap_or_default();
        ServiceSpec {
            request_target: format!("/{name}"),
            name,
            app_file,
            package_paths,
            instances: 1,
            standalone: false,
            auto_start: true,
            protocol: Protocol::Raw,
            max_inbound_message_size: 16 * 1024 * 1024,
            preload: Vec::new(),
            depends: Vec::new(),
            memory_limit: 256 * 1024 * 1024,
            instruction_budget: Some(DEFAULT_INSTRUCTION_BUDGET),
            allow_ffi: false,
            allow_debug: false,
            allow_os_execute: false,
            queue_capacity: 4096,
            queue_bytes: 64 * 1024 * 1024,
            mqr_capacity: 1024,
            auto_fragment: None,
            extra_headers: Vec::new(),
            proto_alias: None,
            max_protocol_errors: 10,
            start_timeout: std::time::Duration::from_secs(30),
            replacing: false,
        }
    }
}

/// About a quarter of a second of interpreted Lua on one core.
pub const DEFAULT_INSTRUCTION_BUDGET: u64 = 100_000_000;
