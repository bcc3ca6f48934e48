//! `lapps.json`: where applications live and which services run.
//!
//! Owns the schema of lapps.json, its defaults, the checks between services (unique request
//! targets, known and acyclic `depends`) and the start order. Must never load Lua or touch the
//! application files: it only says where they are and how to run them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::acl::Acl;
use super::error::{ConfigError, ProblemKind};
use super::reader::{Obj, Reader};

/// The wire protocol of a network service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Messages reach `onMessage` as they are.
    #[default]
    Raw,
    /// CBOR requests/responses modelled on JSON-RPC 2.0.
    LAppS,
}

/// The `directories` object. Relative paths are resolved against the working directory at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directories {
    /// Service `NAME` is `applications/NAME/NAME.lua`.
    pub applications: PathBuf,
    /// Shared Lua modules on every state's `package.path` (default: `lib` next to `applications`).
    pub lib: PathBuf,
    /// The original's per-application configuration files. Read and checked, not used.
    pub app_conf_dir: PathBuf,
    /// The original's working directory. Read and checked, not used.
    pub workdir: PathBuf,
    /// Read and checked, not used.
    pub tmp: PathBuf,
    /// Where the original watched for archives to deploy (default: `workdir/deploy`). Read and
    /// checked, not used: a deploy here is an edit and a SIGHUP (README, "Deploying").
    pub deploy: PathBuf,
}

/// One entry of `services`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The key in `services`; also the application's directory and file name.
    pub name: String,
    pub auto_start: bool,
    /// Parallel copies, each its own LuaJIT state (>= 1).
    pub instances: usize,
    /// Not bound to the network: runs `init()` then `run()`. Key alias: `internal`.
    pub standalone: bool,
    pub protocol: Protocol,
    /// Exact URI path the service answers at (default `/<name>`).
    pub request_target: String,
    /// Larger messages close with 1009.
    pub max_inbound_message_size: usize,
    /// Host modules made available as globals.
    pub preload: Vec<String>,
    /// Services started before this one.
    pub depends: Vec<String>,
    /// `None`: only the server-wide ACL applies.
    pub acl: Option<Acl>,
    /// Extra header lines in the 101 answer: in file order when given as a list of pairs, by
    /// name when given as an object.
    pub extra_headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Protocol` to answer with; without it none is sent.
    pub proto_alias: Option<String>,
    /// `Origin` values accepted at the handshake; `None` accepts any (and a missing Origin).
    pub allowed_origins: Option<Vec<String>>,
    /// Bytes per Lua state; 0 = unlimited.
    pub memory_limit: usize,
    /// VM instructions per callback before it is aborted; 0 = unlimited.
    pub instruction_budget: u64,
    pub allow_ffi: bool,
    pub allow_debug: bool,
    /// `os.execute`, `io.popen` and friends.
    pub allow_os_execute: bool,
    /// Capacity of each instance's inbound queue (messages from the workers); full is
    /// back-pressure on the connections feeding it.
    pub queue_capacity: usize,
    /// Capacity of each `mqr` queue this service creates; a post to a full queue fails with an
    /// error returned to Lua.
    pub mqr_capacity: usize,
    /// A service implemented in Rust instead of Lua (`"echo"`: the built-in echo, the
    /// baseline the Lua services are benchmarked against). No Lua file is loaded for it.
    pub builtin: Option<String>,
    /// LAppS protocol: malformed messages in a row before the connection is closed with 1003.
    pub max_protocol_errors: u32,
}

/// Everything in lapps.json.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LappsConfig {
    pub directories: Directories,
    /// By name; start order comes from [`LappsConfig::start_order`], never from file order.
    pub services: BTreeMap<String, ServiceConfig>,
}

/// Most instances (threads, Lua states) one service may ask for.
const MAX_INSTANCES: usize = 1024;
/// Largest service inbox or MQR queue: both allocate every slot up front.
const MAX_QUEUE: usize = crate::service::mqr::MAX_CAPACITY;

const KEYS: &[&str] = &["directories", "services"];
const DIRECTORY_KEYS: &[&str] = &[
    "applications",
    "lib",
    "app_conf_dir",
    "workdir",
    "tmp",
    "deploy",
];
const SERVICE_KEYS: &[&str] = &[
    "auto_start",
    "instances",
    "standalone",
    "internal",
    "protocol",
    "request_target",
    "max_inbound_message_size",
    "preload",
    "depends",
    "acl",
    "extra_headers",
    "proto_alias",
    "allowed_origins",
    "memory_limit",
    "instruction_budget",
    "allow_ffi",
    "allow_debug",
    "allow_os_execute",
    "queue_capacity",
    "mqr_capacity",
    "builtin",
    "max_protocol_errors",
];

/// Settings of a Lua service that a built-in one has nothing to apply to: refused, not
/// silently ignored.
const LUA_ONLY_KEYS: &[&str] = &[
    "instances",
    "preload",
    "memory_limit",
    "instruction_budget",
    "allow_ffi",
    "allow_debug",
    "allow_os_execute",
    "queue_capacity",
    "mqr_capacity",
    "max_protocol_errors",
];

/// Headers the handshake writes itself, and the rest of RFC 6455's (`Sec-WebSocket-Key`,
/// `-Version` and any later one are not a server's to send in a 101): a service may add none.
fn is_handshake_header(lowercase_name: &str) -> bool {
    lowercase_name == "upgrade"
        || lowercase_name == "connection"
        || lowercase_name.starts_with("sec-websocket-")
}

/// Headers a 1xx answer must not carry (RFC 9110 8.6, RFC 9112 6.1).
const NOT_IN_A_101: &[&str] = &["content-length", "transfer-encoding"];

impl Default for Directories {
    fn default() -> Self {
        let mut r = Reader::new("lapps.json");
        Directories::read(&mut r, None, Path::new("/"))
    }
}

impl Directories {
    fn read(r: &mut Reader, obj: Option<&Obj<'_>>, cwd: &Path) -> Directories {
        let empty = serde_json::Map::new();
        let fallback = Obj {
            map: &empty,
            path: "directories".to_string(),
        };
        let d = obj.unwrap_or(&fallback);
        let applications = d.path(r, "applications", Path::new("/usr/share/lapps/apps"), cwd);
        let lib_default = applications
            .parent()
            .map_or_else(|| PathBuf::from("/usr/share/lapps/lib"), |p| p.join("lib"));
        let lib = d.path(r, "lib", &lib_default, cwd);
        let app_conf_dir = d.path(r, "app_conf_dir", Path::new("/etc/lapps/apps"), cwd);
        let workdir = d.path(r, "workdir", Path::new("/var/lib/lapps"), cwd);
        let tmp = d.path(r, "tmp", &std::env::temp_dir().join("lapps"), cwd);
        let deploy = d.path(r, "deploy", &workdir.join("deploy"), cwd);
        Directories {
            applications,
            lib,
            app_conf_dir,
            workdir,
            tmp,
            deploy,
        }
    }
}

impl ServiceConfig {
    /// A service with every default, as if its entry were `{}`.
    pub fn with_defaults(name: &str) -> ServiceConfig {
        let mut r = Reader::new("lapps.json");
        let obj = Obj {
            map: &serde_json::Map::new(),
            path: String::new(),
        };
        ServiceConfig::read(&mut r, name, &obj)
    }

    /// Whether connections can reach it (not standalone).
    pub fn is_network(&self) -> bool {
        !self.standalone
    }

    /// `max_inbound_message_size` when not given: 16 MiB.
    pub const DEFAULT_MAX_INBOUND_MESSAGE_SIZE: usize = 16 << 20;
    /// `memory_limit` when not set: 64 MiB per Lua state.
    pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
    /// The smallest `memory_limit` other than 0.
    pub const MIN_MEMORY_LIMIT: usize = 1 << 20;

    /// `applications/NAME/NAME.lua`.
    pub fn app_file(&self, dirs: &Directories) -> PathBuf {
        dirs.applications
            .join(&self.name)
            .join(format!("{}.lua", self.name))
    }

    fn read(r: &mut Reader, name: &str, s: &Obj<'_>) -> ServiceConfig {
        let standalone = match (s.get("standalone"), s.get("internal")) {
            (Some(_), Some(_)) => {
                r.problem(
                    ProblemKind::Semantic,
                    &s.path_of("internal"),
                    "give either standalone or its alias internal, not both",
                );
                s.bool(r, "standalone", false)
            }
            (_, Some(_)) => s.bool(r, "internal", false),
            _ => s.bool(r, "standalone", false),
        };
        let protocol = match s.get("protocol") {
            None => Protocol::Raw,
            Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("raw") => Protocol::Raw,
                Some("lapps") => Protocol::LAppS,
                _ => {
                    r.type_error(
                        &s.path_of("protocol"),
                        "\"raw\" or \"LAppS\" (in any case)",
                        v,
                    );
                    Protocol::Raw
                }
            },
        };
        let request_target = s.string(r, "request_target", &format!("/{name}"));
        // As a client sends it: the handshake compares the path byte for byte, never decoded,
        // and refuses a request line with anything but printable ASCII.
        if !request_target.starts_with('/')
            || !request_target
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '?' && c != '#')
        {
            r.problem(
                ProblemKind::Type,
                &s.path_of("request_target"),
                format!(
                    "expected a path starting with '/' in printable ASCII (no query, fragment or \
                     spaces; other characters percent-encoded, as clients send them), got \
                     {request_target:?}"
                ),
            );
        }
        let acl = s.object(r, "acl", Acl::KEYS).map(|a| Acl::read(r, &a));
        let proto_alias = s.opt_string(r, "proto_alias");
        if let Some(alias) = &proto_alias {
            if !is_token(alias) {
                r.problem(
                    ProblemKind::Type,
                    &s.path_of("proto_alias"),
                    format!("expected an HTTP token (a subprotocol name), got {alias:?}"),
                );
            }
        }
        let preload = s.string_list(r, "preload");
        for (i, module) in preload.iter().enumerate() {
            if !is_lua_name(module) {
                r.problem(
                    ProblemKind::Type,
                    &format!("{}[{i}]", s.path_of("preload")),
                    format!("expected a module name, got {module:?}"),
                );
            }
        }
        ServiceConfig {
            name: name.to_string(),
            auto_start: s.bool(r, "auto_start", true),
            instances: s.usize_in(r, "instances", 1, 1, MAX_INSTANCES),
            standalone,
            protocol,
            request_target,
            max_inbound_message_size: s.usize(
                r,
                "max_inbound_message_size",
                ServiceConfig::DEFAULT_MAX_INBOUND_MESSAGE_SIZE,
                1,
            ),
            preload,
            depends: s.string_list(r, "depends"),
            acl,
            extra_headers: read_extra_headers(r, s),
            proto_alias,
            allowed_origins: read_allowed_origins(r, s),
            memory_limit: read_memory_limit(r, s),
            instruction_budget: s.uint(r, "instruction_budget", 100_000_000, 0, u64::MAX),
            allow_ffi: s.bool(r, "allow_ffi", false),
            allow_debug: s.bool(r, "allow_debug", false),
            allow_os_execute: s.bool(r, "allow_os_execute", false),
            queue_capacity: s.usize_in(r, "queue_capacity", 1024, 1, MAX_QUEUE),
            mqr_capacity: s.usize_in(r, "mqr_capacity", 1024, 1, MAX_QUEUE),
            max_protocol_errors: s.uint(r, "max_protocol_errors", 10, 1, u32::MAX as u64) as u32,
            builtin: {
                let b = s.opt_string(r, "builtin");
                if let Some(name) = b.as_deref().filter(|b| *b != "echo") {
                    r.problem(
                        ProblemKind::Semantic,
                        &s.path_of("builtin"),
                        format!("expected \"echo\" (the only built-in service), got {name:?}"),
                    );
                } else if b.is_some() && (standalone || protocol == Protocol::LAppS) {
                    // Keys the built-in echo cannot honour are refused, not silently ignored.
                    r.problem(
                        ProblemKind::Semantic,
                        &s.path_of("builtin"),
                        "the built-in echo serves connections with the RAW protocol: \
                         it cannot be standalone or speak LAppS",
                    );
                }
                if b.is_some() {
                    for key in LUA_ONLY_KEYS.iter().filter(|k| s.get(k).is_some()) {
                        r.problem(
                            ProblemKind::Semantic,
                            &s.path_of(key),
                            "the built-in echo runs no Lua: this setting does not apply to it",
                        );
                    }
                }
                b
            },
        }
    }
}

/// `{"Name": "value", ...}` or `[["Name", "value"], ...]`.
/// `allowed_origins`: each entry as a browser sends its `Origin` (RFC 6454 6.2), or `null`.
/// A path, a trailing `/` or the scheme's default port could never match (browsers send none
/// of them): a config error naming the form to write, rather than a silent 403 for everyone.
fn read_allowed_origins(r: &mut Reader, s: &Obj<'_>) -> Option<Vec<String>> {
    let origins = s.opt_string_list(r, "allowed_origins")?;
    let path = s.path_of("allowed_origins");
    for (i, origin) in origins.iter().enumerate() {
        if let Err(why) = check_origin(origin) {
            r.problem(ProblemKind::Semantic, &format!("{path}[{i}]"), why);
        }
    }
    Some(origins)
}

/// Whether `origin` is `scheme "://" host [":" port]` as browsers serialize it (or `null`).
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!(
            "{origin:?} is not an origin (scheme://host[:port], e.g. \"https://example.com\")"
        ));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("{origin:?}: invalid scheme"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let bare = format!("{scheme}://{authority}");
    if !tail.is_empty() {
        return Err(format!(
            "{origin:?}: an origin has no path (browsers send {bare:?})"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{origin:?}: an origin is scheme://host[:port]"));
    }
    if !authority.is_ascii() {
        return Err(format!(
            "{origin:?}: browsers send a host name in its ASCII (punycode, xn--) form"
        ));
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some("80"),
        "https" | "wss" => Some("443"),
        _ => None,
    };
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let host_end = match (authority.starts_with('['), authority.find(']')) {
        (true, Some(b)) => b + 1,
        (false, None) => 0,
        _ => return Err(format!("{origin:?}: unbalanced brackets")),
    };
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(colon) => {
            let (host, port) = authority.split_at(host_end + colon);
            (host, Some(&port[1..]))
        }
        None => (authority, None),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{origin:?}: no host"));
    }
    if let Some(port) = port {
        let number = port.parse::<u16>().ok().filter(|&p| p > 0);
        if number.is_none() || port.starts_with('0') {
            return Err(format!("{origin:?}: invalid port"));
        }
        if Some(port) == default_port {
            return Err(format!(
                "{origin:?}: browsers leave the default port out (they send \"{scheme}://{host}\")"
            ));
        }
    }
    Ok(())
}

/// `memory_limit`: 0 (no limit) or at least [`ServiceConfig::MIN_MEMORY_LIMIT`] bytes. A
/// smaller one passed the check and then failed the start with a bare "not enough memory"
/// (`64`, meant as MiB, is the likely slip).
fn read_memory_limit(r: &mut Reader, s: &Obj<'_>) -> usize {
    let default = ServiceConfig::DEFAULT_MEMORY_LIMIT;
    let n = s.usize(r, "memory_limit", default, 0);
    if n != 0 && n < ServiceConfig::MIN_MEMORY_LIMIT {
        if let Some(v) = s.get("memory_limit") {
            r.type_error(
                &s.path_of("memory_limit"),
                &format!(
                    "0 (no limit) or a number of bytes >= {} (1 MiB; a Lua state takes about \
                     100 KB before its app is loaded)",
                    ServiceConfig::MIN_MEMORY_LIMIT
                ),
                v,
            );
        }
        return default;
    }
    n
}

fn read_extra_headers(r: &mut Reader, s: &Obj<'_>) -> Vec<(String, String)> {
    let path = s.path_of("extra_headers");
    let Some(value) = s.get("extra_headers") else {
        return Vec::new();
    };
    let mut raw: Vec<(String, &Value)> = Vec::new();
    match value {
        Value::Object(map) => raw.extend(map.iter().map(|(k, v)| (k.clone(), v))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), v]) => raw.push((name.clone(), v)),
                    _ => r.type_error(&format!("{path}[{i}]"), "a [name, value] pair", item),
                }
            }
        }
        other => {
            r.type_error(&path, "an object or a list of [name, value] pairs", other);
        }
    }
    let mut out = Vec::new();
    for (name, v) in raw {
        let item_path = format!("{path}.{name}");
        let Some(text) = v.as_str() else {
            r.type_error(&item_path, "a string", v);
            continue;
        };
        if !is_token(&name) {
            r.problem(ProblemKind::Type, &item_path, "invalid header name");
        } else if is_handshake_header(&name.to_ascii_lowercase()) {
            r.problem(
                ProblemKind::Semantic,
                &item_path,
                "a WebSocket handshake header, which only the server itself writes (use proto_alias for Sec-WebSocket-Protocol)",
            );
        } else if NOT_IN_A_101.contains(&name.to_ascii_lowercase().as_str()) {
            r.problem(
                ProblemKind::Semantic,
                &item_path,
                "not allowed in a 101 answer (RFC 9110 8.6, RFC 9112 6.1)",
            );
        } else if text.chars().any(|c| c.is_control() && c != '\t') {
            // RFC 9110 5.5: visible characters, spaces and tabs; what the handshake refuses
            // from a client, the server does not send.
            r.problem(
                ProblemKind::Type,
                &item_path,
                "header value must not contain control characters (CR, LF, NUL, DEL, ...)",
            );
        } else {
            out.push((name, text.to_string()));
        }
    }
    out
}

/// RFC 7230 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_lua_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// A service name becomes a directory and file name: keep it to a safe set.
fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl LappsConfig {
    pub(crate) fn read(r: &mut Reader, root: &Value, cwd: &Path) -> LappsConfig {
        let obj = r.object(root, "", KEYS);
        let dirs_obj = obj
            .as_ref()
            .and_then(|o| o.object(r, "directories", DIRECTORY_KEYS));
        let directories = Directories::read(r, dirs_obj.as_ref(), cwd);
        let mut services = BTreeMap::new();
        if let Some(list) = obj.as_ref().and_then(|o| o.get("services")) {
            if let Some(map) = r.map(list, "services") {
                for (name, entry) in map {
                    let path = format!("services.{name}");
                    if !is_service_name(name) {
                        r.problem(
                            ProblemKind::Semantic,
                            &path,
                            "invalid service name (letters, digits, '_', '-', '.'; not starting with '.')",
                        );
                        continue;
                    }
                    if let Some(s) = r.object(entry, &path, SERVICE_KEYS) {
                        services.insert(name.clone(), ServiceConfig::read(r, name, &s));
                    }
                }
            }
        }
        let cfg = LappsConfig {
            directories,
            services,
        };
        cfg.check(r);
        cfg
    }

    /// Checks between services.
    fn check(&self, r: &mut Reader) {
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for s in self.services.values().filter(|s| s.is_network()) {
            if let Some(first) = targets.insert(&s.request_target, &s.name) {
                r.problem(
                    ProblemKind::Semantic,
                    &format!("services.{}.request_target", s.name),
                    format!(
                        "{:?} is also the request_target of service {first}",
                        s.request_target
                    ),
                );
            }
        }
        for s in self.services.values() {
            for (i, dep) in s.depends.iter().enumerate() {
                let path = format!("services.{}.depends[{i}]", s.name);
                match self.services.get(dep) {
                    None => r.problem(
                        ProblemKind::Semantic,
                        &path,
                        format!("unknown service {dep:?}"),
                    ),
                    Some(d) if s.auto_start && !d.auto_start => r.problem(
                        ProblemKind::Semantic,
                        &path,
                        format!(
                            "{dep} has auto_start false, so it would never start before {}",
                            s.name
                        ),
                    ),
                    Some(_) if dep == &s.name => r.problem(
                        ProblemKind::Semantic,
                        &path,
                        "a service cannot depend on itself",
                    ),
                    Some(_) => {}
                }
            }
        }
        for cycle in self.cycles() {
            r.problem(
                ProblemKind::Semantic,
                "services",
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    /// Every dependency cycle (of two or more services), each once, as `a, b, ..., a`.
    fn cycles(&self) -> Vec<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        fn visit<'a>(
            cfg: &'a LappsConfig,
            name: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
            stack: &mut Vec<&'a str>,
            out: &mut Vec<Vec<String>>,
        ) {
            marks.insert(name, Mark::OnStack);
            stack.push(name);
            if let Some(s) = cfg.services.get(name) {
                for dep in &s.depends {
                    if dep == name {
                        continue; // reported as self-dependency
                    }
                    match marks.get(dep.as_str()).copied() {
                        Some(Mark::New) => visit(cfg, dep, marks, stack, out),
                        Some(Mark::OnStack) => {
                            let from = stack.iter().position(|n| n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                stack[from..].iter().map(|n| n.to_string()).collect();
                            cycle.push(dep.clone());
                            out.push(cycle);
                        }
                        // Done, or unknown (reported elsewhere).
                        _ => {}
                    }
                }
            }
            stack.pop();
            marks.insert(name, Mark::Done);
        }
        let mut marks: BTreeMap<&str, Mark> = self
            .services
            .keys()
            .map(|k| (k.as_str(), Mark::New))
            .collect();
        let mut out = Vec::new();
        for name in self.services.keys() {
            if marks.get(name.as_str()) == Some(&Mark::New) {
                visit(self, name, &mut marks, &mut Vec::new(), &mut out);
            }
        }
        out
    }

    /// Names of the auto-started services, each after everything it `depends` on; among
    /// services free to start, name order.
    pub fn start_order(&self) -> Result<Vec<String>, ConfigError> {
        let fail = |path: &str, message: String| {
            ConfigError::single(ProblemKind::Semantic, "lapps.json", path, message)
        };
        let starting: Vec<&ServiceConfig> =
            self.services.values().filter(|s| s.auto_start).collect();
        // Remaining unmet dependencies per service.
        let mut waiting: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in &starting {
            let mut deps = BTreeSet::new();
            for dep in &s.depends {
                match self.services.get(dep) {
                    Some(d) if d.auto_start => {
                        if dep != &s.name {
                            deps.insert(dep.as_str());
                        }
                    }
                    Some(_) => {
                        return Err(fail(
                            &format!("services.{}.depends", s.name),
                            format!("{dep} has auto_start false"),
                        ))
                    }
                    None => {
                        return Err(fail(
                            &format!("services.{}.depends", s.name),
                            format!("unknown service {dep:?}"),
                        ))
                    }
                }
            }
            waiting.insert(&s.name, deps);
        }
        let mut order = Vec::with_capacity(starting.len());
        loop {
            let ready = waiting
                .iter()
                .find(|(_, deps)| deps.is_empty())
                .map(|(name, _)| *name);
            let Some(next) = ready else { break };
            waiting.remove(next);
            for deps in waiting.values_mut() {
                deps.remove(next);
            }
            order.push(next.to_string());
        }
        if waiting.is_empty() {
            Ok(order)
        } else {
            let cycle = self
                .cycles()
                .into_iter()
                .next()
                .map(|c| c.join(" -> "))
                .unwrap_or_else(|| waiting.keys().copied().collect::<Vec<_>>().join(", "));
            Err(fail("services", format!("dependency cycle: {cycle}")))
        }
    }
}
