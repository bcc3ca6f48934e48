//! A reload (SIGHUP): the certificate read again, the Lua services brought in line with
//! lapps.json one at a time (started, replaced, stopped), and what only a restart changes
//! (ws.json, the builtin services) named in a warning.

use std::collections::HashMap;

use super::router::route_of;
use super::{lua_spec, not_auto_started, App, NOT_AUTO_STARTED};
use crate::config::{Config, ServiceConfig};

/// What a redeploy did to the Lua services, for the line that ends a reload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redeployed {
    pub started: usize,
    pub replaced: usize,
    pub stopped: usize,
    pub unchanged: usize,
    /// Services whose new version did not load (each reported above), or 1 for a
    /// configuration whose start order cannot be made.
    pub failed: usize,
    /// Of the failed ones, those not running now (a standalone service's old version stops
    /// before its new one starts).
    pub failed_down: usize,
    /// Services whose change waits for the restart: their path is one a builtin service (or
    /// a service that itself waits) serves until then (each reported above, a warning).
    pub waiting: usize,
}

impl std::fmt::Display for Redeployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lua services: {} started, {} replaced, {} stopped, {} unchanged, {} failed",
            self.started, self.replaced, self.stopped, self.unchanged, self.failed
        )?;
        if self.failed_down > 0 {
            write!(f, " ({} of them not running now)", self.failed_down)?;
        }
        if self.waiting > 0 {
            write!(f, ", {} waiting for the restart", self.waiting)?;
        }
        if self.failed > 0 {
            write!(f, " (see the errors above)")?;
        }
        Ok(())
    }
}

/// What a deploy compares: the service's configuration, the content of its app directory,
/// and the shared lib directory (its path and content: every Lua service may `require` from
/// it, so a change there is a new version of each).
#[derive(PartialEq)]
pub(super) struct Deployed {
    config: ServiceConfig,
    app_hash: u64,
    lib: std::path::PathBuf,
    lib_hash: u64,
}

pub(super) fn deployed(cfg: &Config, sc: &ServiceConfig, lib_hash: u64) -> Deployed {
    let file = sc.app_file(&cfg.lapps.directories);
    Deployed {
        config: sc.clone(),
        app_hash: file.parent().map_or(0, app_dir_hash),
        lib: cfg.lapps.directories.lib.clone(),
        lib_hash,
    }
}

/// What makes `now` a new version of `before`, for the deploy's log line.
fn what_changed(before: &Deployed, now: &Deployed) -> String {
    let mut what = Vec::new();
    if before.config != now.config {
        what.push("its lapps.json entry changed");
    }
    if before.app_hash != now.app_hash {
        what.push("its app directory changed");
    }
    if before.lib != now.lib || before.lib_hash != now.lib_hash {
        what.push("the shared lib directory changed");
    }
    what.join(", ")
}

/// Files of an app directory that a deploy looks at, at most; beyond, the rest is not seen.
const APP_DIR_MAX_FILES: usize = 4096;

/// Files up to this size are compared by content, larger ones by size and modification time.
const APP_FILE_MAX_READ: u64 = 16 << 20;

/// Directories of an app that a deploy walks, at most.
const APP_DIR_MAX_DIRS: usize = 4096;

/// A hash of every file under `dir` (names and contents, in name order, subdirectories
/// included), so that a change to any module an app `require`s from its own directory is a
/// new version, not only a change to `NAME.lua`. Symlinks are followed, to files and to
/// directories (a module directory linked in from a shared checkout is the app's as much as
/// Lua's `require` sees it); each directory is walked once, so a link loop ends the walk.
pub(super) fn app_dir_hash(dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut walked = std::collections::HashSet::new();
    let mut files = 0;
    let mut capped = false;
    while let Some(d) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&d) else {
            continue;
        };
        if walked.len() == APP_DIR_MAX_DIRS {
            capped = true;
            continue;
        }
        if !walked.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            // Only regular files are read, so a FIFO or a device cannot block or flood the walk.
            if !meta.is_file() {
                continue;
            }
            if files == APP_DIR_MAX_FILES {
                capped = true;
                continue;
            }
            files += 1;
            path.hash(&mut h);
            if meta.len() <= APP_FILE_MAX_READ {
                // Opened once, without blocking, checked regular as opened and read within the
                // bound: a link into /proc or a file swapped for a FIFO cannot hold the reload.
                crate::file_read::read_regular(&path, APP_FILE_MAX_READ)
                    .ok()
                    .hash(&mut h);
            } else {
                // A large data file: its size and modification time stand for its content.
                (meta.len(), meta.modified().ok()).hash(&mut h);
            }
        }
    }
    if capped {
        crate::warn!(
            "deploy: {} holds more than {APP_DIR_MAX_FILES} files or {APP_DIR_MAX_DIRS} \
             directories (links followed): a change past those is not seen by a reload",
            dir.display()
        );
    }
    h.finish()
}

/// The names of the builtin services added, removed or edited from `before` to `now`.
fn changed_builtins<'a>(before: &'a [ServiceConfig], now: &'a [ServiceConfig]) -> Vec<&'a str> {
    let mut names: Vec<&str> = before
        .iter()
        .filter(|b| !now.contains(b))
        .chain(now.iter().filter(|n| !before.contains(n)))
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The ws.json keys whose values differ between `a` and `b`, for the reload's warning. The
/// destructuring names every field, so that a new one does not build until it is listed.
fn changed_ws_keys(a: &crate::config::WsConfig, b: &crate::config::WsConfig) -> Vec<&'static str> {
    macro_rules! changed {
        ($($key:ident),* ; not compared: $($other:ident),*) => {{
            let crate::config::WsConfig { $($key,)* $($other: _,)* } = a;
            let mut keys = Vec::new();
            $(if *$key != b.$key { keys.push(stringify!($key)); })*
            keys
        }};
    }
    let mut keys = changed!(
        ip, port, listeners, connection_weight, acl, tls, tls_certificates, tls_server_version,
        workers, handshake_timeout_ms, close_timeout_ms, idle_timeout_ms, message_timeout_ms,
        backlog, max_request_bytes, max_headers, outbound_high_water, max_inbound_assembly_bytes,
        max_connections_per_address, per_address_ipv6_prefix, endpoints;
        // Not ws.json keys: whether the key was left out (below), and a test setting.
        not compared: max_inbound_assembly_bytes_by_default, tls12_record_budget
    );
    // Left out of the file or set in it: the same key.
    if a.max_inbound_assembly_bytes_by_default != b.max_inbound_assembly_bytes_by_default
        && !keys.contains(&"max_inbound_assembly_bytes")
    {
        keys.push("max_inbound_assembly_bytes");
    }
    if keys.is_empty() {
        keys.push("settings");
    }
    keys
}

#[derive(PartialEq)]
pub(super) struct RestartOnly {
    ws: crate::config::WsConfig,
    builtins: Vec<ServiceConfig>,
}

impl RestartOnly {
    pub(super) fn of(cfg: &Config) -> RestartOnly {
        let mut ws = cfg.ws.clone();
        if ws.workers.workers_by_default {
            // One per core: the host's count may change (affinity, a CPU quota), the file not.
            ws.workers.workers = 0;
        }
        if ws.workers.max_connections_by_default {
            // Lowered at start-up to what the descriptor limit covers (src/main.rs).
            ws.workers.max_connections = 0;
        }
        if ws.max_inbound_assembly_bytes_by_default {
            // A quarter of the memory, which may change (systemctl set-property MemoryMax=).
            ws.max_inbound_assembly_bytes = 0;
        }
        RestartOnly {
            ws,
            builtins: cfg
                .lapps
                .services
                .values()
                .filter(|s| s.builtin.is_some())
                .cloned()
                .collect(),
        }
    }
}

impl App {
    /// SIGHUP: reloads the TLS certificate (see `reload_tls`) and redeploys the Lua services
    /// of lapps.json that changed (see `redeploy`). False when a part failed (said in the log).
    pub fn reload(&self) -> bool {
        let tls_ok = self.reload_tls();
        let certificate = match (&self.tls, tls_ok) {
            (None, _) => "",
            (Some(_), true) => "certificate read again; ",
            (Some(_), false) => "certificate NOT reloaded (see above); ",
        };
        match Config::load(&self.location) {
            Ok(mut cfg) => {
                let now = RestartOnly::of(&cfg);
                if now.ws != self.restart_only.ws {
                    crate::warn!(
                        "reload: ws.json changed ({}); its changes take effect at the next \
                         restart (systemctl restart lapps)",
                        changed_ws_keys(&self.restart_only.ws, &now.ws).join(", ")
                    );
                    let old = &self.restart_only.ws.tls_certificates;
                    if let (Some(old), true, true) = (
                        old.as_ref().filter(|_| self.tls.is_some()),
                        now.ws.tls_certificates != self.restart_only.ws.tls_certificates,
                        tls_ok,
                    ) {
                        let ca = old
                            .ca
                            .as_ref()
                            .map(|ca| format!(", {}", ca.display()))
                            .unwrap_or_default();
                        crate::warn!(
                            "reload: the certificate was read again from the files the server \
                             started with ({}, {}{ca}), not from the new tls_certificates",
                            old.cert.display(),
                            old.key.display()
                        );
                    }
                }
                let changed = changed_builtins(&self.restart_only.builtins, &now.builtins);
                if !changed.is_empty() {
                    crate::warn!(
                        "reload: builtin service(s) {} changed in lapps.json; they change at \
                         the next restart (systemctl restart lapps)",
                        changed.join(", ")
                    );
                }
                // Until then the services a reload starts frame their sends as the running
                // workers do (auto_fragment is the one ws.json setting a service takes).
                cfg.ws.workers.auto_fragment = self.restart_only.ws.workers.auto_fragment;
                let done = self.redeploy(&cfg);
                if done.failed > 0 || !tls_ok {
                    crate::error!("reload done: {certificate}{done}");
                    false
                } else {
                    crate::info!("reload done: {certificate}{done}");
                    true
                }
            }
            Err(e) => {
                // A file that could not be read (every descriptor taken, a permission) is not
                // an invalid one: the operator must not go looking for a mistake in it.
                let what = if e
                    .problems
                    .iter()
                    .all(|p| p.kind == crate::config::ProblemKind::Io)
                {
                    "unreadable"
                } else {
                    "invalid"
                };
                crate::error!("deploy: configuration {what}, nothing changed:\n{e}");
                crate::error!("reload done: {certificate}configuration {what}, services unchanged");
                false
            }
        }
    }

    /// Brings the running Lua services in line with `cfg`, one service at a time, while the
    /// others keep serving: a new service is started, a service whose configuration or app
    /// file changed is replaced (its clients are closed with 1001 and reconnect to the new
    /// version), a service no longer configured is stopped (once the service that takes over
    /// its path runs, when one does). A version that fails to load is reported and the running
    /// one stays (a standalone one was stopped first: it stays stopped, and the next SIGHUP
    /// tries again). ws.json and builtin services need a restart.
    pub fn redeploy(&self, cfg: &Config) -> Redeployed {
        let mut done = Redeployed::default();
        let order = match cfg.lapps.start_order() {
            Ok(o) => o,
            Err(e) => {
                crate::error!("deploy: {e}");
                done.failed += 1;
                return done;
            }
        };
        {
            // Services no longer configured go; each other one's outcome is set below.
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            down.retain(|name, why| {
                cfg.lapps
                    .services
                    .get(name)
                    .is_some_and(|sc| sc.builtin.is_none())
                    && why != NOT_AUTO_STARTED
            });
            down.extend(not_auto_started(cfg));
        }
        let set_down = |name: &str, why: Option<String>| {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            match why {
                Some(why) => down.insert(name.to_string(), why),
                None => down.remove(name),
            };
        };
        let mut deployed_map = self.deployed.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: Vec<&ServiceConfig> = order
            .iter()
            .map(|n| &cfg.lapps.services[n])
            .filter(|sc| sc.builtin.is_none())
            .collect();
        // A path the new configuration gives to some service that runs (maybe another one: a
        // rename, a swap) keeps its route; only paths nobody claims any more are unrouted. A
        // service with auto_start false (builtin or Lua) never starts: it claims nothing.
        let claimed = |path: &str| {
            cfg.lapps
                .services
                .values()
                .any(|s| s.is_network() && s.request_target == path && s.auto_start)
        };
        // Removals first, so that a path a removed service leaves is free for its successor.
        // A network service whose path another service takes over (a rename) stays until
        // that one runs: if it fails to load, the path keeps being served.
        let mut left: Vec<String> = deployed_map
            .keys()
            .filter(|n| !wanted.iter().any(|sc| &sc.name == *n))
            .cloned()
            .collect();
        // Dependents first: a receiver removed with its senders waits for them to stop (see
        // Registry::retire), which it knows of only once they retire.
        let depends_on = |m: &String, n: &String| {
            deployed_map
                .get(m)
                .is_some_and(|d| d.config.depends.contains(n))
        };
        let mut gone = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let next = left
                .iter()
                .position(|n| !left.iter().any(|m| depends_on(m, n)))
                .unwrap_or(0);
            gone.push(left.remove(next));
        }
        let mut handed_on = Vec::new();
        for name in gone {
            let Some((network, path)) = deployed_map
                .get(&name)
                .map(|b| (b.config.is_network(), b.config.request_target.clone()))
            else {
                continue;
            };
            if network && claimed(&path) {
                handed_on.push((name, path));
                continue;
            }
            deployed_map.remove(&name);
            if network {
                self.router.unset(&path);
            }
            let n = self.registry.remove(&name);
            crate::info!("deploy: stopped service {name} ({n} connection(s) closed)");
            done.stopped += 1;
        }
        let lib_hash = app_dir_hash(&cfg.lapps.directories.lib);
        let mut nows: HashMap<String, Deployed> = wanted
            .iter()
            .map(|sc| (sc.name.clone(), deployed(cfg, sc, lib_hash)))
            .collect();
        let waiting = self.waiting_for_restart(&wanted, &deployed_map, &nows);
        for sc in &wanted {
            let Some(now) = nows.remove(&sc.name) else {
                continue;
            };
            let was_running = deployed_map.contains_key(&sc.name);
            if let Some(holder) = waiting.get(&sc.name) {
                // Not a failure: the builtin's change is one that waits for the restart.
                done.waiting += 1;
                crate::warn!(
                    "deploy: service {} waits for the restart: {holder} serves {} until then{}",
                    sc.name,
                    crate::log::shown(&sc.request_target),
                    if was_running {
                        "; its running version keeps serving"
                    } else {
                        ""
                    }
                );
                set_down(
                    &sc.name,
                    (!was_running).then(|| {
                        format!(
                            "it waits for the restart ({holder} serves {} until then)",
                            crate::log::shown(&sc.request_target)
                        )
                    }),
                );
                continue;
            }
            if self.still_stuck(&sc.name, &now) {
                done.failed += 1;
                let running = self.registry.running().contains(&sc.name);
                done.failed_down += usize::from(!running);
                set_down(
                    &sc.name,
                    (!running).then(|| {
                        "its last start timed out and its init/onStart still runs (change the \
                         app, or restart the server)"
                            .to_string()
                    }),
                );
                crate::error!(
                    "deploy: service {}: this version is not started again: its last start \
                     timed out and its init/onStart still runs (change the app, or restart \
                     the server){}",
                    sc.name,
                    if running {
                        "; the running version keeps serving"
                    } else {
                        ""
                    }
                );
                continue;
            }
            let result = match deployed_map.get(&sc.name) {
                Some(before) if *before == now => {
                    done.unchanged += 1;
                    set_down(&sc.name, None);
                    continue;
                }
                Some(before) => {
                    let left = before.config.request_target.clone();
                    let moved = before.config.is_network() && left != sc.request_target;
                    let why = what_changed(before, &now);
                    let was_network = before.config.is_network();
                    self.registry.replace(lua_spec(cfg, sc)).map(|n| {
                        // Only once the new version runs: a failed replace keeps the old path.
                        if moved && !claimed(&left) {
                            self.router.unset(&left);
                        }
                        done.replaced += 1;
                        if was_network {
                            format!(
                                "replaced service {} ({why}; {n} connection(s) asked to \
                                 reconnect)",
                                sc.name
                            )
                        } else {
                            format!("replaced service {} ({why})", sc.name)
                        }
                    })
                }
                None => self.registry.add(lua_spec(cfg, sc)).map(|()| {
                    done.started += 1;
                    format!("started service {}", sc.name)
                }),
            };
            match result {
                Ok(what) => {
                    set_down(&sc.name, None);
                    crate::info!("deploy: {what}");
                    if sc.is_network() {
                        self.router.set(sc.request_target.clone(), route_of(sc));
                    }
                    deployed_map.insert(sc.name.clone(), now);
                }
                Err(e) if self.registry.running().contains(&sc.name) => {
                    set_down(&sc.name, None);
                    done.failed += 1;
                    self.note_if_stuck(&sc.name, now, &e.to_string());
                    crate::error!("deploy: {e}; the running version keeps serving")
                }
                Err(e) => {
                    self.note_if_stuck(&sc.name, now, &e.to_string());
                    // Nothing of it runs (a standalone service is stopped before its new
                    // version starts): forget it, so that the next SIGHUP starts it again.
                    set_down(
                        &sc.name,
                        Some(
                            "its last start failed (see the deploy: lines); the next SIGHUP \
                             tries again"
                                .to_string(),
                        ),
                    );
                    // Not running now: its old version was taken down first, or there was none.
                    done.failed += 1;
                    done.failed_down += 1;
                    deployed_map.remove(&sc.name);
                    crate::error!("deploy: {e}; service {} is not running", sc.name)
                }
            }
        }
        for (name, path) in handed_on {
            // The route is the successor's once it runs (set above); until then it was ours.
            let successor = cfg.lapps.services.values().find(|s| {
                s.is_network() && s.request_target == path && deployed_map.contains_key(&s.name)
            });
            match successor {
                Some(s) => {
                    deployed_map.remove(&name);
                    let n = self.registry.remove(&name);
                    crate::info!(
                        "deploy: stopped service {name} ({n} connection(s) closed); {} serves {} now",
                        s.name,
                        crate::log::shown(&path)
                    );
                    done.stopped += 1;
                }
                None => match cfg.lapps.services.values().find(|s| {
                    s.is_network()
                        && s.request_target == path
                        && s.builtin.is_some()
                        && s.auto_start
                }) {
                    // Builtin services change at a restart (warned above): not a failure.
                    Some(b) => crate::warn!(
                        "deploy: service {name} keeps serving {} until the restart that starts \
                         builtin service {}",
                        crate::log::shown(&path),
                        b.name
                    ),
                    // Its failure to start was counted and logged above.
                    None => crate::error!(
                        "deploy: service {name} keeps serving {}: the service configured \
                         there did not start",
                        crate::log::shown(&path)
                    ),
                },
            }
        }
        self.warn_of_missing_dependencies(cfg);
        done
    }

    /// Whether `now` is the version of `name` whose start timed out and still runs (see
    /// `App::stuck`); a version stuck no longer is forgotten.
    fn still_stuck(&self, name: &str, now: &Deployed) -> bool {
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = stuck.get(name) else {
            return false;
        };
        // Kept while that start runs, whatever version comes meanwhile: going back to it is
        // trying it again.
        if !crate::service::lua::left_behind::start_still_runs(name) {
            stuck.remove(name);
            return false;
        }
        s == now
    }

    /// After a failed start of `name`'s version `now` (`error`): remembered when it timed out
    /// and its start still runs.
    fn note_if_stuck(&self, name: &str, now: Deployed, error: &str) {
        if error.contains(crate::service::lua::left_behind::START_TIMEOUT_TEXT)
            && crate::service::lua::left_behind::start_still_runs(name)
        {
            let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
            stuck.insert(name.to_string(), now);
        }
    }

    /// A running service whose dependency this deploy left not running (its new version
    /// failed) keeps serving without it: a warning names both, so that the operator knows
    /// which clients miss what (a trial's echo_lapps went on with its time broadcast gone).
    fn warn_of_missing_dependencies(&self, cfg: &Config) {
        let running = self.registry.running();
        let up = |name: &String| {
            running.contains(name)
                || self
                    .restart_only
                    .builtins
                    .iter()
                    .any(|b| &b.name == name && b.auto_start)
        };
        for sc in cfg.lapps.services.values() {
            if !running.contains(&sc.name) {
                continue;
            }
            let down: Vec<&str> = sc
                .depends
                .iter()
                .filter(|d| !up(d))
                .map(String::as_str)
                .collect();
            if !down.is_empty() {
                crate::warn!(
                    "deploy: service {} runs without {}, which it depends on and which is not \
                     running",
                    sc.name,
                    down.join(", ")
                );
            }
        }
    }

    /// The Lua services of `wanted` whose change waits for the restart, with who holds their
    /// path until then. Builtin services change only at a restart, so the paths the running
    /// ones serve stay theirs: a changed Lua service given one waits (routed there, it would
    /// hide the builtin, whose new path serves nothing yet). One that waits keeps its running
    /// version at the path it serves now, which holds that path in turn: another service
    /// given it waits too, or it would hide the running version the log says keeps serving.
    fn waiting_for_restart(
        &self,
        wanted: &[&ServiceConfig],
        deployed_map: &HashMap<String, Deployed>,
        nows: &HashMap<String, Deployed>,
    ) -> HashMap<String, String> {
        // Path -> (the service holding it, for the log).
        let mut holders: HashMap<String, (Option<String>, String)> = self
            .restart_only
            .builtins
            .iter()
            .filter(|b| b.auto_start && b.is_network())
            .map(|b| {
                (
                    b.request_target.clone(),
                    (None, format!("builtin service {}", b.name)),
                )
            })
            .collect();
        let mut waiting = HashMap::new();
        loop {
            let mut more = false;
            for sc in wanted.iter().filter(|sc| sc.is_network()) {
                let before = deployed_map.get(&sc.name);
                if waiting.contains_key(&sc.name) || before == nows.get(&sc.name) {
                    continue; // waits already, or unchanged (it keeps its path)
                }
                let Some((holder, what)) = holders.get(&sc.request_target) else {
                    continue;
                };
                if holder.as_deref() == Some(sc.name.as_str()) {
                    continue;
                }
                waiting.insert(sc.name.clone(), what.clone());
                if let Some(b) = before.filter(|b| b.config.is_network()) {
                    holders.entry(b.config.request_target.clone()).or_insert((
                        Some(sc.name.clone()),
                        format!("the running version of service {}", sc.name),
                    ));
                }
                more = true;
            }
            if !more {
                return waiting;
            }
        }
    }
}
