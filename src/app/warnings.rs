//! What an operator should hear about a configuration that is not an error.

use crate::config::{Config, Protocol, ServiceConfig};

/// What an operator should hear about the configuration that is not an error (at start-up and
/// from `--check-config`): certificates given while no endpoint serves wss:// (a forgotten
/// `"tls": true` serves plain ws://); a standalone service given settings only services
/// clients connect to use; `"::"` without `"0.0.0.0"` on the same port, which IPv4 clients
/// cannot reach (our IPv6 sockets are IPV6_V6ONLY, unlike the original's and 0.1.0's).
pub fn warnings(cfg: &Config) -> Vec<String> {
    let endpoints = cfg.ws.listen_endpoints();
    let any_tls = endpoints.iter().any(|e| e.tls);
    let mut out = Vec::new();
    if cfg.ws.tls_certificates.is_some() && !any_tls {
        out.push(
            "ws.json: tls_certificates is set but no endpoint has \"tls\": true, so every \
             endpoint serves plain ws://"
                .to_string(),
        );
    }
    // An ACL that excludes no one from a deny policy refuses everybody: legal (a way to
    // close a service for a while), but rarely meant.
    let shuts_out = |acl: &crate::config::Acl| {
        acl.policy == crate::config::Policy::Deny && acl.exclude.is_empty()
    };
    if shuts_out(&cfg.ws.acl) {
        out.push(
            "ws.json: acl denies every client (policy \"deny\" with nothing in \"exclude\"): \
             every connection is closed as it is accepted"
                .to_string(),
        );
    }
    for s in cfg.lapps.services.values().filter(|s| !s.standalone) {
        if s.acl.as_ref().is_some_and(shuts_out) {
            out.push(format!(
                "lapps.json: services.{}.acl denies every client (policy \"deny\" with nothing \
                 in \"exclude\"): every request for {} is answered 403",
                s.name,
                crate::log::shown(&s.request_target)
            ));
        }
    }
    let any_v4 = |port: u16| {
        endpoints
            .iter()
            .any(|e| e.port == port && e.ip == std::net::IpAddr::from([0, 0, 0, 0]))
    };
    for s in cfg.lapps.services.values().filter(|s| s.standalone) {
        let unused: Vec<&str> = [
            ("request_target", s.request_target != format!("/{}", s.name)),
            ("protocol", s.protocol == Protocol::LAppS),
            ("acl", s.acl.is_some()),
            ("allowed_origins", s.allowed_origins.is_some()),
            ("proto_alias", s.proto_alias.is_some()),
            ("extra_headers", !s.extra_headers.is_empty()),
            (
                "max_inbound_message_size",
                s.max_inbound_message_size != ServiceConfig::DEFAULT_MAX_INBOUND_MESSAGE_SIZE,
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if !unused.is_empty() {
            let (verb, they) = if unused.len() == 1 {
                ("applies", "it does")
            } else {
                ("apply", "they do")
            };
            out.push(format!(
                "lapps.json: services.{}: {} {verb} only to services clients connect to; \
                 this one is standalone, so {they} nothing",
                s.name,
                unused.join(", ")
            ));
        }
    }
    // listen(2) takes any backlog and silently uses at most this host's somaxconn.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(max) = somaxconn.filter(|&max| cfg.ws.backlog > max) {
        out.push(format!(
            "ws.json: backlog {} is above this host's net.core.somaxconn ({max}): the kernel \
             queues at most {max} connections per listener; raise the sysctl to use more",
            cfg.ws.backlog
        ));
    }
    for e in &endpoints {
        if e.ip == std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) && !any_v4(e.port) {
            out.push(format!(
                "ws.json: \"::\" listens on IPv6 only (port {}): IPv4 clients cannot connect; \
                 add an endpoint on \"0.0.0.0\" with the same port for them",
                e.port
            ));
        }
    }
    out
}
