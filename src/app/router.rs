//! Which service an upgrade request goes to: its path, then the service's ACL and Origin list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::config::{Acl, ServiceConfig};
use crate::net::worker::{Refusal, Router};
use crate::service::echo::Echo;
use crate::service::registry::Registry;
use crate::service::Service;
use crate::ws::handshake::Request;

/// One routable service with its handshake-time checks.
pub(super) struct Route {
    target: Target,
    acl: Option<Acl>,
    allowed_origins: Option<Vec<String>>,
}

enum Target {
    /// A Rust service (`"builtin"`).
    Builtin(Arc<dyn Service>),
    /// A Lua service, looked up in the registry at each handshake (a redeploy swaps it).
    Lua,
}

/// Routes by exact request-target path (the query string is ignored), then applies the
/// service's ACL and Origin list: 404 for an unknown path, 403 for a refused peer or origin.
/// The table changes when services are deployed, replaced or removed (SIGHUP).
pub struct AppRouter {
    routes: RwLock<HashMap<String, Route>>,
    registry: Arc<Registry>,
}

impl AppRouter {
    pub(super) fn new(registry: Arc<Registry>) -> AppRouter {
        AppRouter {
            routes: RwLock::new(HashMap::new()),
            registry,
        }
    }

    pub(super) fn set(&self, path: String, route: Route) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, route);
    }

    pub(super) fn unset(&self, path: &str) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }
}

impl Router for AppRouter {
    fn route(&self, req: &Request, peer: IpAddr) -> Result<Arc<dyn Service>, Refusal> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let route = routes.get(&req.path).ok_or(Refusal::from(404))?;
        // The worker logs the refusal with the peer, the path and the rule given here.
        let forbidden = |why: String| Refusal { status: 403, why };
        if let Some(acl) = &route.acl {
            if !acl.allows(peer) {
                return Err(forbidden("not allowed by the service's acl".into()));
            }
        }
        if let Some(origins) = &route.allowed_origins {
            match &req.origin {
                // An origin's scheme and host are case-insensitive (RFC 6454 4).
                Some(o) if origins.iter().any(|a| a.eq_ignore_ascii_case(o)) => {}
                Some(o) => {
                    let o = crate::log::shown(o);
                    return Err(forbidden(format!("Origin {o} not in allowed_origins")));
                }
                None => {
                    return Err(forbidden("no Origin, allowed_origins requires one".into()));
                }
            }
        }
        match &route.target {
            Target::Builtin(s) => Ok(s.clone()),
            Target::Lua => self.registry.route(&req.path).ok_or(Refusal::from(404)),
        }
    }
}

pub(super) fn route_of(sc: &ServiceConfig) -> Route {
    let target = match sc.builtin.as_deref() {
        Some(_) => Target::Builtin(Arc::new(
            Echo::new(sc.name.clone(), sc.max_inbound_message_size)
                .with_handshake(sc.proto_alias.clone(), sc.extra_headers.clone()),
        )),
        None => Target::Lua,
    };
    Route {
        target,
        acl: sc.acl.clone(),
        allowed_origins: sc.allowed_origins.clone(),
    }
}
