//! The JSON configuration: `ws.json` (the WebSocket server) and `lapps.json` (directories and
//! services) in one configuration directory.
//!
//! Owns finding the files ([`locate`]), reading and validating both files
//! ([`Config::load`], the one call the binary makes) and the typed model with every default.
//! Every problem is reported with its file, key path, what was expected and what was found;
//! unknown keys are errors. Must never start anything or touch the files the config points to
//! (apps, certificates): later stages do, with the paths resolved here.
//!
//! Relative paths inside the files (directories, certificates) are resolved against the current
//! working directory at load time, so `cargo run` from the repository root finds `./lua/apps`.

mod acl;
mod error;
mod lapps;
mod reader;
mod unique;
mod ws;

#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

pub use acl::{Acl, IpNet, Policy};
pub use error::{ConfigError, Problem, ProblemKind};
pub use lapps::{Directories, LappsConfig, Protocol, ServiceConfig};
pub use ws::{quarter_of_memory, Endpoint, TlsCertificates, Workers, WsConfig, DEFAULT_PORT};

use reader::Reader;

/// Default file names inside the configuration directory.
pub const WS_FILE: &str = "ws.json";
pub const LAPPS_FILE: &str = "lapps.json";
/// Where the installed package keeps its configuration.
pub const SYSTEM_DIR: &str = "/etc/lapps";
/// The repository's own configuration, used when running from a checkout.
pub const REPO_DIR: &str = "./etc/lapps";

/// Where the two files are read from: a directory and, when overridden, the files' names in it
/// (an absolute name is used as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub dir: PathBuf,
    pub ws_file: Option<OsString>,
    pub lapps_file: Option<OsString>,
}

impl Location {
    /// The directory, and the files read instead of its ws.json and lapps.json when the
    /// environment names others: what "configuration in ..." must say for an operator to look
    /// at the right files.
    pub fn describe(&self) -> String {
        let mut out = self.dir.display().to_string();
        let named: Vec<String> = [(WS_FILE, &self.ws_file), (LAPPS_FILE, &self.lapps_file)]
            .into_iter()
            .filter_map(|(default, given)| {
                let given = given.as_ref()?;
                Some(format!("{default} from {}", self.dir.join(given).display()))
            })
            .collect();
        if !named.is_empty() {
            out.push_str(&format!(" ({})", named.join(", ")));
        }
        out
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The directory both files were read from.
    pub dir: PathBuf,
    /// The names they were read by (`ws.json`, `lapps.json` unless overridden).
    pub ws_file: String,
    pub lapps_file: String,
    pub ws: WsConfig,
    pub lapps: LappsConfig,
}

impl Config {
    /// Reads and checks the two files of `at` ([`locate`] finds them).
    pub fn load(at: &Location) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().map_err(|e| {
            ConfigError::single(
                ProblemKind::Io,
                WS_FILE,
                "",
                format!("cannot determine the working directory: {e}"),
            )
        })?;
        Config::load_from(
            &at.dir,
            at.ws_file.as_deref(),
            at.lapps_file.as_deref(),
            &cwd,
        )
    }

    /// [`Config::load`] with the environment passed in: file-name overrides and the directory
    /// relative paths are resolved against.
    pub fn load_from(
        dir: &Path,
        ws_name: Option<&OsStr>,
        lapps_name: Option<&OsStr>,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let ws_name = file_name(ws_name, WS_FILE);
        let lapps_name = file_name(lapps_name, LAPPS_FILE);
        let ws_text = read(dir, &ws_name);
        let lapps_text = read(dir, &lapps_name);
        match (ws_text, lapps_text) {
            (Ok(w), Ok(l)) => Config::from_strs(dir, (&ws_name, &w), (&lapps_name, &l), cwd),
            (w, l) => {
                let problems = [w.err(), l.err()].into_iter().flatten().collect();
                Err(ConfigError { problems })
            }
        }
    }

    /// Parses and checks both files from text; `(label, text)` pairs, the label naming the file
    /// in messages.
    pub fn from_strs(
        dir: &Path,
        ws: (&str, &str),
        lapps: (&str, &str),
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let ws_result = WsConfig::from_json_str(ws.0, ws.1, cwd);
        let lapps_result = LappsConfig::from_json_str(lapps.0, lapps.1, cwd);
        let (ws_file, lapps_file) = (ws.0.to_string(), lapps.0.to_string());
        match (ws_result, lapps_result) {
            (Ok(ws), Ok(lapps)) => {
                if let Some(p) = queues_past_memory(&ws, &lapps, &lapps_file, quarter_of_memory()) {
                    return Err(ConfigError { problems: vec![p] });
                }
                Ok(Config {
                    dir: dir.to_path_buf(),
                    ws_file,
                    lapps_file,
                    ws,
                    lapps,
                })
            }
            (w, l) => {
                let problems = [w.err(), l.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e.problems)
                    .collect();
                Err(ConfigError { problems })
            }
        }
    }
}

/// The Lua services' inbound queues are allocated whole when they start: `instances` x
/// ([`crate::service::lua::inbox_bytes`]). Past `bound` (a quarter of the memory) together,
/// the configuration is refused here, naming the largest, rather than failing or being killed
/// at start: the ceilings on `instances` and `queue_capacity` alone allow terabytes.
fn queues_past_memory(
    ws: &WsConfig,
    lapps: &LappsConfig,
    lapps_file: &str,
    bound: u64,
) -> Option<Problem> {
    let per_service = lapps
        .services
        .values()
        .filter(|s| s.builtin.is_none() && !s.standalone)
        .map(|s| {
            let one = crate::service::lua::inbox_bytes(s.queue_capacity, ws.workers.workers);
            (one.saturating_mul(s.instances as u64), s)
        });
    let total: u64 = per_service
        .clone()
        .map(|(b, _)| b)
        .fold(0, u64::saturating_add);
    if total <= bound {
        return None;
    }
    let (largest, s) = per_service.max_by_key(|(b, _)| *b)?;
    const MIB: u64 = 1 << 20;
    Some(Problem {
        kind: ProblemKind::Semantic,
        file: lapps_file.to_string(),
        path: format!("services.{}", s.name),
        message: format!(
            "the services' inbound queues would take {} MiB when they start, more than a \
             quarter of the memory ({} MiB); this one's {} instances x queue_capacity {} take \
             {} MiB: lower instances or queue_capacity",
            total / MIB,
            bound / MIB,
            s.instances,
            s.queue_capacity,
            largest / MIB
        ),
    })
}

impl WsConfig {
    /// Parses ws.json text; `label` names the file in messages.
    pub fn from_json_str(label: &str, text: &str, cwd: &Path) -> Result<WsConfig, ConfigError> {
        let root = parse(label, text)?;
        let mut r = Reader::new(label);
        let cfg = WsConfig::read(&mut r, &root, cwd);
        ConfigError::from_problems(r.problems).map(|()| cfg)
    }
}

impl LappsConfig {
    /// Parses lapps.json text; `label` names the file in messages.
    pub fn from_json_str(label: &str, text: &str, cwd: &Path) -> Result<LappsConfig, ConfigError> {
        let root = parse(label, text)?;
        let mut r = Reader::new(label);
        let cfg = LappsConfig::read(&mut r, &root, cwd);
        ConfigError::from_problems(r.problems).map(|()| cfg)
    }
}

fn parse(label: &str, text: &str) -> Result<serde_json::Value, ConfigError> {
    serde_json::from_str(text)
        .map(|unique::Unique(v)| v)
        .map_err(|e| {
            // serde_json's Display appends " at line L column C"; keep only the reason.
            let full = e.to_string();
            let reason = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(reason, _)| reason);
            ConfigError::single(
                ProblemKind::Syntax,
                label,
                "",
                format!(
                    "invalid JSON at line {}, column {}: {reason}",
                    e.line(),
                    e.column()
                ),
            )
        })
}

fn file_name(overridden: Option<&OsStr>, default: &str) -> String {
    match overridden {
        Some(name) if !name.is_empty() => name.to_string_lossy().into_owned(),
        _ => default.to_string(),
    }
}

fn read(dir: &Path, name: &str) -> Result<String, Problem> {
    let path = dir.join(name);
    crate::file_read::read_regular_text(&path, crate::file_read::CONFIG_MAX).map_err(|e| Problem {
        kind: ProblemKind::Io,
        file: name.to_string(),
        path: String::new(),
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Where the configuration is. `-c DIR` wins over the environment (SPEC 7): the operator
/// named a directory, and its `ws.json` and `lapps.json` are read whatever `LAPPS_CONF_DIR`,
/// `WS_CONFIG` and `LAPPS_CONFIG` say. Without it, `LAPPS_CONF_DIR` (else `./etc/lapps` when
/// it exists, running from the repository, else `/etc/lapps`) with the file names of
/// `WS_CONFIG` and `LAPPS_CONFIG`.
pub fn locate(cli: Option<&Path>) -> Location {
    if let Some(dir) = cli {
        return Location {
            dir: dir.to_path_buf(),
            ws_file: None,
            lapps_file: None,
        };
    }
    let env_dir = std::env::var_os("LAPPS_CONF_DIR");
    Location {
        dir: resolve_dir_from(None, env_dir.as_deref(), Path::new(REPO_DIR).is_dir()),
        ws_file: std::env::var_os("WS_CONFIG"),
        lapps_file: std::env::var_os("LAPPS_CONFIG"),
    }
}

/// The configuration directory without `-c`: `LAPPS_CONF_DIR` when set, else `./etc/lapps`
/// when it exists, else `/etc/lapps` (the part of [`locate`] that does not read the
/// environment).
pub fn resolve_dir_from(
    cli: Option<&Path>,
    env_dir: Option<&OsStr>,
    repo_dir_exists: bool,
) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_path_buf();
    }
    if let Some(dir) = env_dir.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if repo_dir_exists {
        PathBuf::from(REPO_DIR)
    } else {
        PathBuf::from(SYSTEM_DIR)
    }
}
