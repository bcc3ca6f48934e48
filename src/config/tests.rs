//! Loading, defaults and every kind of error message.

use super::*;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::Path;

const CWD: &str = "/srv/lapps";

fn ws(text: &str) -> Result<WsConfig, ConfigError> {
    WsConfig::from_json_str("ws.json", text, Path::new(CWD))
}

fn lapps(text: &str) -> Result<LappsConfig, ConfigError> {
    LappsConfig::from_json_str("lapps.json", text, Path::new(CWD))
}

/// The error's lines, for exact assertions.
fn lines<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> Vec<String> {
    r.expect_err("expected a config error")
        .to_string()
        .lines()
        .map(str::to_string)
        .collect()
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---- defaults ----

#[test]
fn empty_ws_json_gives_every_default() {
    let c = ws("{}").unwrap();
    assert_eq!(c.ip, "0.0.0.0");
    assert_eq!(c.port, 5083);
    assert_eq!(c.listeners, 1);
    assert_eq!(c.connection_weight, 1.0);
    assert!(c.acl.allows_everyone());
    assert!(!c.tls);
    assert_eq!(c.tls_certificates, None);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.workers.workers, cores);
    assert_eq!(c.workers.max_connections, 100_000);
    assert_eq!(c.workers.auto_fragment, None);
    assert_eq!(c.workers.input_buffer_size, 2048);
    assert_eq!(c.workers.max_poll_events, 256);
    assert_eq!(c.workers.max_poll_wait_ms, 10);
    assert_eq!(c.workers.max_inbounds_skip, 50);
    assert_eq!(c.handshake_timeout_ms, 5000);
    assert_eq!(c.close_timeout_ms, 3000);
    assert_eq!(c.idle_timeout_ms, 60_000);
    assert_eq!(c.message_timeout_ms, 120_000);
    assert_eq!(c.backlog, 1024);
    assert_eq!(c.max_request_bytes, 8192);
    assert_eq!(c.max_headers, 64);
    assert_eq!(c.outbound_high_water, 4 << 20);
    // A quarter of the memory (the host's or the cgroup's): some, and below a terabyte.
    assert!(
        (1..=1 << 40).contains(&c.max_inbound_assembly_bytes),
        "{}",
        c.max_inbound_assembly_bytes
    );
    assert_eq!(c.max_connections_per_address, 0);
    assert_eq!(c.per_address_ipv6_prefix, 64);
    assert!(c.endpoints.is_empty());
    assert_eq!(c, WsConfig::default());
}

#[test]
fn the_lowest_cgroup_memory_max_on_the_way_up_bounds_the_default_cap() {
    use std::path::Path;
    let files = |p: &Path| match p.to_str()? {
        "/sys/fs/cgroup/system.slice/lapps.service/memory.max" => Some("max\n".to_string()),
        "/sys/fs/cgroup/system.slice/memory.max" => Some("2147483648\n".to_string()),
        "/sys/fs/cgroup/user.slice/u/memory.max" => Some("1073741824\n".to_string()),
        "/sys/fs/cgroup/user.slice/memory.max" => Some("3221225472\n".to_string()),
        "/sys/fs/cgroup/memory/system.slice/lapps.service/memory.limit_in_bytes" => {
            Some("536870912\n".to_string())
        }
        "/sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes" => {
            Some("9223372036854771712\n".to_string())
        }
        _ => None,
    };
    let max = |own: &str| super::ws::cgroup_memory_max(own, files);
    // v2: "max" is no limit, a parent's limit counts; the lower of two wins, wherever it is.
    assert_eq!(max("0::/system.slice/lapps.service\n"), Some(2 << 30));
    assert_eq!(max("0::/user.slice/u\n"), Some(1 << 30));
    // v1 (or hybrid without a v2 limit): the memory controller's line.
    assert_eq!(
        max("5:cpu,cpuacct:/x\n4:memory:/system.slice/lapps.service\n0::/other\n"),
        Some(512 << 20)
    );
    // No limit anywhere, or no cgroup line: nothing to say.
    assert_eq!(max("0::/\n"), None);
    assert_eq!(max(""), None);
}

#[test]
fn inbound_assembly_cap_is_read_and_zero_turns_it_off() {
    let c = ws(r#"{"max_inbound_assembly_bytes": 1048576}"#).unwrap();
    assert_eq!(c.max_inbound_assembly_bytes, 1 << 20);
    let c = ws(r#"{"max_inbound_assembly_bytes": 0}"#).unwrap();
    assert_eq!(c.max_inbound_assembly_bytes, 0);
    let e = ws(r#"{"max_inbound_assembly_bytes": -1}"#).unwrap_err();
    assert!(e.to_string().contains("max_inbound_assembly_bytes"), "{e}");
}

#[test]
fn empty_service_gets_every_default() {
    let c = lapps(r#"{"services": {"svc": {}}}"#).unwrap();
    let s = &c.services["svc"];
    assert_eq!(s, &ServiceConfig::with_defaults("svc"));
    assert!(s.auto_start);
    assert_eq!(s.instances, 1);
    assert!(!s.standalone);
    assert_eq!(s.protocol, Protocol::Raw);
    assert_eq!(s.request_target, "/svc");
    assert_eq!(s.max_inbound_message_size, 16_777_216);
    assert!(s.preload.is_empty() && s.depends.is_empty() && s.extra_headers.is_empty());
    assert_eq!(s.acl, None);
    assert_eq!(s.proto_alias, None);
    assert_eq!(s.allowed_origins, None);
    assert_eq!(s.memory_limit, 64 << 20);
    assert_eq!(s.instruction_budget, 100_000_000);
    assert!(!s.allow_ffi && !s.allow_debug && !s.allow_os_execute);
    assert_eq!(s.queue_capacity, 1024);
    assert_eq!(s.mqr_capacity, 1024);
    assert_eq!(
        c.directories.applications,
        Path::new("/usr/share/lapps/apps")
    );
    assert_eq!(c.directories.lib, Path::new("/usr/share/lapps/lib"));
    assert_eq!(c.directories.deploy, Path::new("/var/lib/lapps/deploy"));
}

#[test]
fn relative_directories_resolve_against_the_working_directory() {
    let c = lapps(r#"{"directories": {"applications": "./lua/apps", "workdir": "/abs"}}"#).unwrap();
    assert_eq!(c.directories.applications, Path::new("/srv/lapps/lua/apps"));
    assert_eq!(c.directories.lib, Path::new("/srv/lapps/lua/lib"));
    assert_eq!(c.directories.workdir, Path::new("/abs"));
    assert_eq!(c.directories.deploy, Path::new("/abs/deploy"));
}

#[test]
fn auto_fragment_accepts_false_true_or_a_size() {
    let f = |v: &str| {
        ws(&format!(
            r#"{{"workers": {{"auto_fragment": {v}, "input_buffer_size": 4096}}}}"#
        ))
    };
    assert_eq!(f("false").unwrap().workers.auto_fragment, None);
    assert_eq!(f("true").unwrap().workers.auto_fragment, Some(4096));
    assert_eq!(f("1000").unwrap().workers.auto_fragment, Some(1000));
    assert_eq!(
        lines(f("0")),
        ["ws.json: workers.auto_fragment: expected false, true or a frame size >= 1, got 0"]
    );
}

#[test]
fn protocol_is_case_insensitive_and_internal_is_an_alias() {
    let c = lapps(
        r#"{"services": {"a": {"protocol": "lapps"}, "b": {"protocol": "RAW", "internal": true}}}"#,
    )
    .unwrap();
    assert_eq!(c.services["a"].protocol, Protocol::LAppS);
    assert_eq!(c.services["b"].protocol, Protocol::Raw);
    assert!(c.services["b"].standalone);
    assert_eq!(
        lines(lapps(r#"{"services": {"a": {"protocol": "rpc"}}}"#)),
        [r#"lapps.json: services.a.protocol: expected "raw" or "LAppS" (in any case), got "rpc""#]
    );
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"standalone": true, "internal": true}}}"#
        )),
        ["lapps.json: services.a.internal: give either standalone or its alias internal, not both"]
    );
}

#[test]
fn allowed_origins_are_origins_as_browsers_send_them() {
    let c = lapps(
        r#"{"services": {"a": {"allowed_origins": ["https://example.com",
            "http://localhost:8080", "https://[::1]:8443", "null", "HTTPS://Example.COM"]}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.services["a"].allowed_origins.as_ref().map(Vec::len),
        Some(5)
    );
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"allowed_origins": ["https://example.com/", "example.com",
                "https://example.com:443", "http://example.com:80", "https://example.com/app",
                "https://u@example.com", "https://example.com:x", "https://[::1]:443",
                "https://exämple.com", "https://[::1", "https://:8080", "https://a.example:0443",
                "https://a.example:65536", "https://a.example:0"]}}}"#
        )),
        [
            r#"lapps.json: services.a.allowed_origins[0]: "https://example.com/": an origin has no path (browsers send "https://example.com")"#,
            r#"lapps.json: services.a.allowed_origins[1]: "example.com" is not an origin (scheme://host[:port], e.g. "https://example.com")"#,
            r#"lapps.json: services.a.allowed_origins[2]: "https://example.com:443": browsers leave the default port out (they send "https://example.com")"#,
            r#"lapps.json: services.a.allowed_origins[3]: "http://example.com:80": browsers leave the default port out (they send "http://example.com")"#,
            r#"lapps.json: services.a.allowed_origins[4]: "https://example.com/app": an origin has no path (browsers send "https://example.com")"#,
            r#"lapps.json: services.a.allowed_origins[5]: "https://u@example.com": an origin is scheme://host[:port]"#,
            r#"lapps.json: services.a.allowed_origins[6]: "https://example.com:x": invalid port"#,
            r#"lapps.json: services.a.allowed_origins[7]: "https://[::1]:443": browsers leave the default port out (they send "https://[::1]")"#,
            r#"lapps.json: services.a.allowed_origins[8]: "https://exämple.com": browsers send a host name in its ASCII (punycode, xn--) form"#,
            r#"lapps.json: services.a.allowed_origins[9]: "https://[::1": unbalanced brackets"#,
            r#"lapps.json: services.a.allowed_origins[10]: "https://:8080": no host"#,
            r#"lapps.json: services.a.allowed_origins[11]: "https://a.example:0443": invalid port"#,
            r#"lapps.json: services.a.allowed_origins[12]: "https://a.example:65536": invalid port"#,
            r#"lapps.json: services.a.allowed_origins[13]: "https://a.example:0": invalid port"#,
        ]
    );
}

#[test]
fn extra_headers_as_map_or_pairs_and_checked() {
    let c = lapps(
        r#"{"services": {
            "a": {"extra_headers": {"X-One": "1"}},
            "b": {"extra_headers": [["X-Two", "2"], ["X-Three", "3"]]}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.services["a"].extra_headers,
        [("X-One".into(), "1".into())]
    );
    assert_eq!(
        c.services["b"].extra_headers,
        [
            ("X-Two".to_string(), "2".to_string()),
            ("X-Three".to_string(), "3".to_string())
        ]
    );
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"extra_headers": {"X-A": "x\r\nSet-Cookie: y", "Bad Name": "v", "Upgrade": "h2c",
                "sec-websocket-version": "13", "Transfer-Encoding": "chunked", "X-B": "a\u0001b", "X-C": "a\u007fb", "X-D": "tab\tok"}}}}"#
        )),
        [
            "lapps.json: services.a.extra_headers.Bad Name: invalid header name",
            "lapps.json: services.a.extra_headers.Transfer-Encoding: not allowed in a 101 answer (RFC 9110 8.6, RFC 9112 6.1)",
            "lapps.json: services.a.extra_headers.Upgrade: a WebSocket handshake header, which only the server itself writes (use proto_alias for Sec-WebSocket-Protocol)",
            "lapps.json: services.a.extra_headers.X-A: header value must not contain control characters (CR, LF, NUL, DEL, ...)",
            "lapps.json: services.a.extra_headers.X-B: header value must not contain control characters (CR, LF, NUL, DEL, ...)",
            "lapps.json: services.a.extra_headers.X-C: header value must not contain control characters (CR, LF, NUL, DEL, ...)",
            "lapps.json: services.a.extra_headers.sec-websocket-version: a WebSocket handshake header, which only the server itself writes (use proto_alias for Sec-WebSocket-Protocol)",
        ]
    );
    let c = lapps(
        r#"{"services": {"a": {"extra_headers": {"X-D": "tab\tok", "Content-Length": "0"}}}}"#,
    );
    assert_eq!(
        lines(c),
        ["lapps.json: services.a.extra_headers.Content-Length: not allowed in a 101 answer (RFC 9110 8.6, RFC 9112 6.1)"]
    );
    assert_eq!(
        lines(lapps(r#"{"services": {"a": {"extra_headers": [["X"]]}}}"#)),
        ["lapps.json: services.a.extra_headers[0]: expected a [name, value] pair, got an array"]
    );
}

#[test]
fn endpoints_list_extra_listening_addresses() {
    let c = ws(r#"{"ip": "127.0.0.1", "port": 0,
        "endpoints": [{"port": 5084}, {"ip": "::1", "port": 5085}]}"#)
    .unwrap();
    let all = c.listen_endpoints();
    let addrs: Vec<String> = all.iter().map(|e| e.socket_addr().to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:0", "127.0.0.1:5084", "[::1]:5085"]);
    assert_eq!(
        lines(ws(
            r#"{"ip": "127.0.0.1", "endpoints": [{"port": 5083}, {"ip": "::1"}]}"#
        )),
        [
            "ws.json: endpoints[1].port: missing (each extra endpoint needs its port)",
            "ws.json: endpoints[0]: 127.0.0.1:5083 is listed twice",
        ]
    );
    // An entry left out for its error does not shift the index the others are named by.
    assert_eq!(
        lines(ws(
            r#"{"ip": "127.0.0.1", "endpoints": [{"ip": "x", "port": 1}, {"port": 5083}]}"#
        )),
        [
            "ws.json: endpoints[0].ip: expected an IPv4 or IPv6 address, got \"x\"",
            "ws.json: endpoints[1]: 127.0.0.1:5083 is listed twice",
        ]
    );
}

#[test]
fn endpoints_that_can_never_both_listen_are_errors_naming_both() {
    // A wildcard takes its port on every address of its family (IPv6 listeners are V6ONLY).
    assert_eq!(
        lines(ws(
            r#"{"ip": "0.0.0.0", "endpoints": [{"ip": "127.0.0.1", "port": 5083}]}"#
        )),
        [
            "ws.json: endpoints[0]: 127.0.0.1:5083 overlaps 0.0.0.0:5083 (top-level ip/port): \
          0.0.0.0 takes port 5083 on every IPv4 address, so only one of them could listen"
        ]
    );
    assert_eq!(
        lines(ws(r#"{"ip": "127.0.0.1", "port": 0, "endpoints": [
            {"ip": "::1", "port": 7000}, {"ip": "::", "port": 7000, "tls": false}]}"#)),
        [
            "ws.json: endpoints[1]: [::]:7000 overlaps [::1]:7000 (endpoints[0]): \
          :: takes port 7000 on every IPv6 address, so only one of them could listen"
        ]
    );
    // An IPv4-mapped IPv6 address is IPv4.
    assert_eq!(
        lines(ws(
            r#"{"ip": "127.0.0.1", "endpoints": [{"ip": "::ffff:127.0.0.1", "port": 5083}]}"#
        )),
        [
            "ws.json: endpoints[0]: [::ffff:127.0.0.1]:5083 overlaps 127.0.0.1:5083 \
          (top-level ip/port): 127.0.0.1 and ::ffff:127.0.0.1 are the same IPv4 address, \
          so only one of them could listen"
        ]
    );
    // A top-level ip that did not parse is reported alone (its stand-in is not compared).
    assert_eq!(
        lines(ws(
            r#"{"ip": "x", "endpoints": [{"ip": "127.0.0.1", "port": 5083}]}"#
        )),
        ["ws.json: ip: expected an IPv4 or IPv6 address, got \"x\""]
    );
    // Either family's wildcard beside the other's, distinct addresses, other ports, port 0.
    let c = ws(
        r#"{"ip": "0.0.0.0", "endpoints": [{"ip": "::", "port": 5083},
        {"ip": "::1", "port": 5084}, {"ip": "127.0.0.1", "port": 5084},
        {"ip": "127.0.0.2", "port": 5084}, {"ip": "0.0.0.0", "port": 5085},
        {"ip": "127.0.0.1", "port": 0}, {"ip": "0.0.0.0", "port": 0}]}"#,
    )
    .unwrap();
    assert_eq!(c.listen_endpoints().len(), 8);
}

#[test]
fn acl_in_ws_json_is_parsed_to_a_matcher() {
    let c = ws(r#"{"acl": {"policy": "deny", "exclude": ["127.0.0.0/8", "::1"]}}"#).unwrap();
    assert!(c.acl.allows("127.0.0.5".parse::<IpAddr>().unwrap()));
    assert!(c.acl.allows("::ffff:127.0.0.5".parse::<IpAddr>().unwrap()));
    assert!(c.acl.allows("::1".parse::<IpAddr>().unwrap()));
    assert!(!c.acl.allows("10.0.0.1".parse::<IpAddr>().unwrap()));
}

#[test]
fn per_address_ipv6_prefix_is_a_prefix_length() {
    let c = ws(r#"{"per_address_ipv6_prefix": 56}"#).unwrap();
    assert_eq!(c.per_address_ipv6_prefix, 56);
    assert!(ws(r#"{"per_address_ipv6_prefix": 129}"#).is_err());
}

// ---- error kinds ----

#[test]
fn unknown_keys_are_errors_naming_their_path() {
    let e = ws(r#"{"workers": {"max_conections": 5}, "prot": 1}"#).unwrap_err();
    assert!(e.has(ProblemKind::UnknownKey));
    let text: Vec<String> = e.to_string().lines().map(String::from).collect();
    assert_eq!(
        text,
        [
            "ws.json: prot: unknown key (known: ip, port, listeners, connection_weight, acl, tls, tls_certificates, tls_server_version, lapps_config_auto_save, tls_client_version, workers, handshake_timeout_ms, close_timeout_ms, idle_timeout_ms, message_timeout_ms, backlog, max_request_bytes, max_headers, outbound_high_water, max_inbound_assembly_bytes, max_connections_per_address, per_address_ipv6_prefix, endpoints)",
            "ws.json: workers.max_conections: unknown key (known: workers, max_connections, auto_fragment, input_buffer_size, max_poll_events, max_poll_wait_ms, max_inbounds_skip)",
        ]
    );
    assert_eq!(
        lines(lapps(r#"{"services": {"echo": {"instance": 2}}}"#))[0]
            .split(" (known")
            .next(),
        Some("lapps.json: services.echo.instance: unknown key")
    );
    assert_eq!(
        lines(lapps(r#"{"directories": {"apps": "x"}}"#)),
        ["lapps.json: directories.apps: unknown key (known: applications, lib, app_conf_dir, workdir, tmp, deploy)"]
    );
}

#[test]
fn a_key_with_control_characters_prints_escaped_on_its_own_line() {
    let e = ws("{\"po\\nrt\": 1, \"x\\u007f\": 2}").unwrap_err();
    let text: Vec<String> = e.to_string().lines().map(String::from).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("ws.json: po\\nrt: unknown key"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("ws.json: x\\u{7f}: unknown key"),
        "{text:?}"
    );
    let bad_name = lapps("{\"services\": {\"a\\tb\": {}}}");
    assert!(
        lines(bad_name)[0].starts_with("lapps.json: services.a\\tb: invalid service name"),
        "a service name is a key too"
    );
}

#[test]
fn wrong_types_name_file_path_expected_and_got() {
    assert_eq!(
        lines(ws(r#"{"port": "abc"}"#)),
        [r#"ws.json: port: expected a whole number 0-65535, got "abc""#]
    );
    assert_eq!(
        lines(ws(
            r#"{"tls": "yes", "listeners": 0, "connection_weight": -1, "workers": 4, "ip": "localhost"}"#
        )),
        [
            r#"ws.json: ip: expected an IPv4 or IPv6 address, got "localhost""#,
            r#"ws.json: tls: expected true or false, got "yes""#,
            "ws.json: workers: expected an object, got 4",
            "ws.json: listeners: expected a whole number 1-1024, got 0",
            "ws.json: connection_weight: expected a number >= 0, got -1",
        ]
    );
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"preload": "bcast", "depends": [1]}}}"#
        )),
        [
            r#"lapps.json: services.a.preload: expected an array of strings, got "bcast""#,
            "lapps.json: services.a.depends[0]: expected a string, got 1",
        ]
    );
    assert_eq!(
        lines(lapps(r#"{"services": []}"#)),
        ["lapps.json: services: expected an object, got an array"]
    );
    assert_eq!(
        lines(ws("[]")),
        ["ws.json: expected an object, got an array"]
    );
}

#[test]
fn syntax_errors_give_file_line_and_column() {
    let e = ws("{\n  \"port\": 5083,\n  \"ip\": \n}").unwrap_err();
    assert!(e.has(ProblemKind::Syntax));
    assert_eq!(
        e.to_string(),
        "ws.json: invalid JSON at line 4, column 1: expected value"
    );
    assert_eq!(
        lines(lapps("{\"services\": {},}")),
        ["lapps.json: invalid JSON at line 1, column 17: trailing comma"]
    );
}

#[test]
fn a_key_written_twice_is_an_error_at_its_line() {
    // A copied service block whose name was not changed: the first service is not lost
    // without a word.
    assert_eq!(
        lines(lapps(
            "{\"services\": {\n  \"echo\": {\"instances\": 1},\n  \"echo\": {\"instances\": 2}\n}}"
        )),
        ["lapps.json: invalid JSON at line 3, column 8: the key \"echo\" is there twice"]
    );
    assert!(ws(r#"{"port": 5083, "port": 5084}"#)
        .unwrap_err()
        .has(ProblemKind::Syntax));
    // The same key in different objects is fine.
    assert!(lapps(r#"{"services": {"a": {"instances": 1}, "b": {"instances": 1}}}"#).is_ok());
}

#[test]
fn zero_instances_is_an_error() {
    assert_eq!(
        lines(lapps(r#"{"services": {"echo": {"instances": 0}}}"#)),
        ["lapps.json: services.echo.instances: expected a whole number 1-1024, got 0"]
    );
}

#[test]
fn counts_that_size_threads_or_buffers_up_front_have_a_ceiling() {
    assert_eq!(
        lines(lapps(
            r#"{"services": {"e": {"instances": 100000, "queue_capacity": 1e12,
                                   "mqr_capacity": 2000000}}}"#
        )),
        [
            "lapps.json: services.e.instances: expected a whole number 1-1024, got 100000",
            "lapps.json: services.e.queue_capacity: expected a whole number 1-1048576, got 1000000000000.0",
            "lapps.json: services.e.mqr_capacity: expected a whole number 1-1048576, got 2000000",
        ]
    );
    assert_eq!(
        lines(ws(
            r#"{"listeners": 5000, "max_request_bytes": 1e9, "max_headers": 5000,
                    "workers": {"workers": 5000, "max_poll_events": 1e9,
                                "input_buffer_size": 1e10}}"#
        )),
        [
            "ws.json: workers.input_buffer_size: expected a whole number 1-67108864, got 10000000000.0",
            "ws.json: workers.workers: expected a whole number 1-32, got 5000",
            "ws.json: workers.max_poll_events: expected a whole number 1-65536, got 1000000000.0",
            "ws.json: listeners: expected a whole number 1-1024, got 5000",
            "ws.json: max_request_bytes: expected a whole number 256-1048576, got 1000000000.0",
            "ws.json: max_headers: expected a whole number 8-1024, got 5000",
        ]
    );
}

#[test]
fn invalid_acl_entries_are_errors() {
    assert_eq!(
        lines(ws(
            r#"{"acl": {"policy": "maybe", "exclude": ["10.0.0.0/33", "1.2.3.4", "fe80::zz"]}}"#
        )),
        [
            r#"ws.json: acl.policy: expected "allow" or "deny", got "maybe""#,
            r#"ws.json: acl.exclude[0]: invalid IP address or CIDR "10.0.0.0/33""#,
            r#"ws.json: acl.exclude[2]: invalid IP address or CIDR "fe80::zz""#,
        ]
    );
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"acl": {"exclude": ["nope"], "mode": 1}}}}"#
        )),
        [
            "lapps.json: services.a.acl.mode: unknown key (known: policy, exclude)",
            r#"lapps.json: services.a.acl.exclude[0]: invalid IP address or CIDR "nope""#,
        ]
    );
}

#[test]
fn tls_without_certificates_is_an_error() {
    let e = ws(r#"{"tls": true}"#).unwrap_err();
    assert!(e.has(ProblemKind::Semantic));
    assert_eq!(
        e.to_string(),
        "ws.json: tls: tls is true but tls_certificates (cert, key) is missing"
    );
    assert_eq!(
        lines(ws(r#"{"endpoints": [{"port": 1, "tls": true}]}"#)),
        ["ws.json: endpoints[0].tls: tls is true but tls_certificates (cert, key) is missing"]
    );
    assert_eq!(
        lines(ws(
            r#"{"tls": true, "tls_certificates": {"cert": "c.pem"}}"#
        )),
        ["ws.json: tls_certificates.key: missing (a PEM file path)"]
    );
    let c = ws(
        r#"{"tls": true, "tls_certificates": {"cert": "c.pem", "key": "/k.pem", "ca": "ca.pem"}}"#,
    )
    .unwrap();
    assert_eq!(
        c.tls_certificates,
        Some(TlsCertificates {
            cert: "/srv/lapps/c.pem".into(),
            key: "/k.pem".into(),
            ca: Some("/srv/lapps/ca.pem".into()),
        })
    );
}

#[test]
fn duplicate_request_targets_among_network_services_are_errors() {
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"request_target": "/x"}, "b": {"request_target": "/x"},
                "c": {"standalone": true, "request_target": "/x"}}}"#
        )),
        [r#"lapps.json: services.b.request_target: "/x" is also the request_target of service a"#]
    );
    for target in ["x?y", "/a?b", "/a#b", "/a b", "/café", "/a\u{7f}"] {
        let json = serde_json::json!({"services": {"a": {"request_target": target}}});
        assert_eq!(
            lines(lapps(&json.to_string())),
            [format!(
                "lapps.json: services.a.request_target: expected a path starting with '/' in \
                 printable ASCII (no query, fragment or spaces; other characters \
                 percent-encoded, as clients send them), got {target:?}"
            )]
        );
    }
}

#[test]
fn depends_on_unknown_disabled_or_self_are_errors() {
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"depends": ["ghost", "off", "a"]}, "off": {"auto_start": false}}}"#
        )),
        [
            r#"lapps.json: services.a.depends[0]: unknown service "ghost""#,
            "lapps.json: services.a.depends[1]: off has auto_start false, so it would never start before a",
            "lapps.json: services.a.depends[2]: a service cannot depend on itself",
        ]
    );
}

#[test]
fn dependency_cycles_are_named() {
    assert_eq!(
        lines(lapps(
            r#"{"services": {"a": {"depends": ["b"]}, "b": {"depends": ["c"]}, "c": {"depends": ["a"]},
                "d": {"depends": ["a"]}}}"#
        )),
        ["lapps.json: services: dependency cycle: a -> b -> c -> a"]
    );
}

#[test]
fn invalid_service_names_are_errors() {
    assert_eq!(
        lines(lapps(r#"{"services": {"../etc": {}}}"#)),
        ["lapps.json: services.../etc: invalid service name (letters, digits, '_', '-', '.'; not starting with '.')"]
    );
}

#[test]
fn several_problems_across_both_files_are_reported_together() {
    let e = Config::from_strs(
        Path::new("/c"),
        ("ws.json", r#"{"port": -1}"#),
        ("lapps.json", r#"{"services": {"a": {"instances": "2"}}}"#),
        Path::new(CWD),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ws.json: port: expected a whole number 0-65535, got -1\n\
         lapps.json: services.a.instances: expected a whole number 1-1024, got \"2\""
    );
    assert_eq!(e.problems.len(), 2);
}

#[test]
fn services_whose_queues_would_not_fit_the_memory_are_refused() {
    let w = ws(r#"{ "workers": { "workers": 2 } }"#).unwrap();
    let l = lapps(
        r#"{ "services": { "small": {}, "big": { "instances": 64, "queue_capacity": 1048576 } } }"#,
    )
    .unwrap();
    let p = queues_past_memory(&w, &l, "lapps.json", 1 << 30).expect("refused");
    assert_eq!(
        (p.file.as_str(), p.path.as_str()),
        ("lapps.json", "services.big")
    );
    assert!(
        p.message
            .contains("more than a quarter of the memory (1024 MiB)")
            && p.message.contains("64 instances x queue_capacity 1048576"),
        "{}",
        p.message
    );
    // The defaults take little; a standalone service has no inbound queue.
    let fine = lapps(
        r#"{ "services": { "small": {}, "alone": { "standalone": true, "instances": 64,
                                                   "queue_capacity": 1048576 } } }"#,
    )
    .unwrap();
    assert_eq!(queues_past_memory(&w, &fine, "lapps.json", 1 << 30), None);
    // Loading checks it, against the memory there is: 1024 x 1 Mi slots are over 100 GiB.
    let e = Config::from_strs(
        Path::new("/c"),
        ("ws.json", "{}"),
        (
            "lapps.json",
            r#"{ "services": { "big": { "instances": 1024, "queue_capacity": 1048576 } } }"#,
        ),
        Path::new(CWD),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("lapps.json: services.big: the services' inbound queues would take"),
        "{e}"
    );
}

// ---- start order ----

#[test]
fn start_order_follows_depends_then_names_and_skips_disabled() {
    let c = lapps(
        r#"{"services": {
            "z": {}, "web": {"depends": ["db", "cache"]}, "db": {}, "cache": {"depends": ["db"]},
            "off": {"auto_start": false, "depends": ["z"]}}}"#,
    )
    .unwrap();
    assert_eq!(c.start_order().unwrap(), ["db", "cache", "web", "z"]);
}

#[test]
fn start_order_reports_a_cycle_in_a_hand_built_config() {
    let mut c = LappsConfig::default();
    for (name, dep) in [("a", "b"), ("b", "a")] {
        let mut s = ServiceConfig::with_defaults(name);
        s.depends = vec![dep.to_string()];
        c.services.insert(name.to_string(), s);
    }
    assert_eq!(
        c.start_order().unwrap_err().to_string(),
        "lapps.json: services: dependency cycle: a -> b -> a"
    );
}

// ---- files, env overrides, directory resolution ----

#[test]
fn resolve_dir_precedence_cli_then_env_then_repo_then_system() {
    let cli = Path::new("/from/cli");
    let env = OsStr::new("/from/env");
    assert_eq!(resolve_dir_from(Some(cli), Some(env), true), cli);
    assert_eq!(
        resolve_dir_from(None, Some(env), true),
        Path::new("/from/env")
    );
    assert_eq!(
        resolve_dir_from(None, Some(OsStr::new("")), true),
        Path::new(REPO_DIR)
    );
    assert_eq!(resolve_dir_from(None, None, true), Path::new("./etc/lapps"));
    assert_eq!(resolve_dir_from(None, None, false), Path::new("/etc/lapps"));
}

#[test]
fn committed_repo_configs_load() {
    let dir = repo_root().join("etc/lapps");
    let c = Config::load_from(&dir, None, None, repo_root()).unwrap();
    assert_eq!(c.dir, dir);
    assert_eq!(c.ws.ip, "127.0.0.1");
    assert_eq!(c.ws.port, 5083);
    assert_eq!(
        c.lapps.directories.applications,
        repo_root().join("lua/apps")
    );
    let names: Vec<&str> = c.lapps.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "benchmark",
            "chat",
            "echo",
            "echo_builtin",
            "echo_lapps",
            "mqr_receiver",
            "mqr_sender",
            "time_broadcast"
        ]
    );
    let s = &c.lapps.services;
    assert_eq!(
        (s["echo"].protocol, s["echo"].request_target.as_str()),
        (Protocol::Raw, "/echo")
    );
    assert_eq!(
        (
            s["echo_lapps"].protocol,
            s["echo_lapps"].request_target.as_str()
        ),
        (Protocol::LAppS, "/echo_lapps")
    );
    assert_eq!(s["chat"].request_target, "/chat");
    assert!(s["time_broadcast"].standalone && s["benchmark"].standalone);
    assert!(!s["benchmark"].auto_start);
    let order = c.lapps.start_order().unwrap();
    assert!(!order.contains(&"benchmark".to_string()));
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(pos("time_broadcast") < pos("echo_lapps"));
    assert!(pos("mqr_receiver") < pos("mqr_sender"));
    assert!(s["mqr_sender"].preload.contains(&"mqr".to_string()));
    assert_eq!(
        s["echo"].app_file(&c.lapps.directories),
        repo_root().join("lua/apps/echo/echo.lua")
    );
}

/// A scratch directory under target/ removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = repo_root()
            .join("target/config-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_names_can_be_overridden_and_missing_files_are_reported() {
    let dir = Scratch::new("override");
    std::fs::write(dir.0.join("alt-ws.json"), r#"{"port": 6000}"#).unwrap();
    std::fs::write(dir.0.join("alt-lapps.json"), r#"{"services": {}}"#).unwrap();
    let c = Config::load_from(
        &dir.0,
        Some(OsStr::new("alt-ws.json")),
        Some(OsStr::new("alt-lapps.json")),
        Path::new(CWD),
    )
    .unwrap();
    assert_eq!(c.ws.port, 6000);
    assert!(c.lapps.services.is_empty());

    let e = Config::load_from(
        &dir.0,
        None,
        Some(OsStr::new("alt-lapps.json")),
        Path::new(CWD),
    )
    .unwrap_err();
    assert!(e.has(ProblemKind::Io));
    assert_eq!(e.problems.len(), 1);
    let line = e.to_string();
    assert!(
        line.starts_with(&format!(
            "ws.json: cannot read {}: ",
            dir.0.join("ws.json").display()
        )),
        "{line}"
    );
}

#[test]
fn a_builtin_service_refuses_keys_it_cannot_honour() {
    let l = lines(lapps(
        r#"{"services": {"e": {"builtin": "echo", "standalone": true},
                         "f": {"builtin": "echo", "protocol": "LAppS"}}}"#,
    ));
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[0].contains("services.e.builtin") && l[0].contains("RAW"),
        "{l:?}"
    );
    assert!(
        l[1].contains("services.f.builtin") && l[1].contains("LAppS"),
        "{l:?}"
    );
    assert!(lapps(r#"{"services": {"e": {"builtin": "echo", "proto_alias": "x"}}}"#).is_ok());
    let l = lines(lapps(
        r#"{"services": {"e": {"builtin": "echo", "instances": 2, "memory_limit": 8388608,
                               "preload": ["bcast"], "request_target": "/e"}}}"#,
    ));
    assert_eq!(l.len(), 3, "{l:?}");
    for key in ["instances", "memory_limit", "preload"] {
        assert!(
            l.iter()
                .any(|x| x.contains(&format!("services.e.{key}")) && x.contains("runs no Lua")),
            "{key}: {l:?}"
        );
    }
}

#[test]
fn workers_stop_at_what_a_connection_handle_can_name() {
    assert_eq!(
        ws(r#"{"workers": {"workers": 32}}"#)
            .unwrap()
            .workers
            .workers,
        32
    );
    assert_eq!(
        lines(ws(r#"{"workers": {"workers": 33}}"#)),
        ["ws.json: workers.workers: expected a whole number 1-32, got 33"]
    );
    assert!(ws("{}").unwrap().workers.workers <= crate::net::handle::ConnId::MAX_WORKERS);
}

#[test]
fn a_range_error_names_the_ceiling_of_a_key_that_has_one() {
    assert_eq!(
        lines(ws(r#"{ "max_connections_per_address": 4294967296 }"#)),
        ["ws.json: max_connections_per_address: expected a whole number 0-4294967295, got 4294967296"]
    );
}

#[test]
fn the_originals_ws_json_keys_are_read_and_checked() {
    let c = ws(
        r#"{ "lapps_config_auto_save": true, "tls_server_version": 13, "tls_client_version": 12 }"#,
    )
    .unwrap();
    assert_eq!(c.tls_server_version, 13);
    assert_eq!(ws("{}").unwrap().tls_server_version, 12);
    // The original's own values (its files say 4): 4 is TLS 1.3 only, 3 TLS 1.2 (and 1.3).
    let original = r#"{ "tls_server_version": 4, "tls_client_version": 4 }"#;
    assert_eq!(ws(original).unwrap().tls_server_version, 13);
    let three = r#"{ "tls_server_version": 3, "tls_client_version": 3 }"#;
    assert_eq!(ws(three).unwrap().tls_server_version, 12);
    let errors = lines(ws(
        r#"{ "tls_server_version": 11, "lapps_config_auto_save": 1, "tls_client_version": 1.5 }"#,
    ));
    assert_eq!(
        errors,
        [
            "ws.json: lapps_config_auto_save: expected true or false, got 1",
            "ws.json: tls_client_version: expected 3 or 12 (TLS 1.2 and 1.3), 4 or 13 (TLS 1.3), got 1.5",
            "ws.json: tls_server_version: expected 3 or 12 (TLS 1.2 and 1.3), 4 or 13 (TLS 1.3), got 11"
        ]
    );
}

#[test]
fn a_memory_limit_below_one_mib_is_refused_naming_the_unit() {
    for small in ["1", "64", "65536", "1048575"] {
        let l = lines(lapps(&format!(
            r#"{{"services": {{"e": {{"memory_limit": {small}}}}}}}"#
        )));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].contains("services.e.memory_limit")
                && l[0].contains("0 (no limit) or a number of bytes >= 1048576")
                && l[0].ends_with(&format!("got {small}")),
            "{l:?}"
        );
    }
    for fine in [0, 1 << 20, 64 << 20] {
        let c = lapps(&format!(
            r#"{{"services": {{"e": {{"memory_limit": {fine}}}}}}}"#
        ))
        .expect("accepted");
        assert_eq!(c.services["e"].memory_limit, fine);
    }
}

#[test]
fn a_location_names_the_files_the_environment_put_elsewhere() {
    let mut at = Location {
        dir: "/etc/lapps".into(),
        ws_file: None,
        lapps_file: None,
    };
    assert_eq!(at.describe(), "/etc/lapps");
    at.ws_file = Some("/srv/b/ws.json".into());
    at.lapps_file = Some("other.json".into());
    assert_eq!(
        at.describe(),
        "/etc/lapps (ws.json from /srv/b/ws.json, lapps.json from /etc/lapps/other.json)"
    );
}
