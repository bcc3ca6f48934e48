//! Helpers for the Registry-level tests (start-up errors, standalone services, mqr, cws): the
//! service specs of the test and example apps, and the real Hub a Registry runs on. What a
//! connection sees is tested through the real server instead (tests/common/mod.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lapps::net::hub::Hub;
use lapps::service::lua::ServiceSpec;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A spec for `dir/name/name.lua` with the app dir and lua/lib on package.path.
pub fn spec(dir: &Path, name: &str) -> ServiceSpec {
    let app_dir = dir.join(name);
    let mut s = ServiceSpec::new(name, app_dir.join(format!("{name}.lua")));
    s.package_paths = vec![app_dir, root().join("lua/lib")];
    s
}

pub fn test_app(name: &str) -> ServiceSpec {
    spec(&root().join("tests/apps"), name)
}

/// The probe test app with the host modules it uses.
pub fn probe() -> ServiceSpec {
    let mut s = test_app("probe");
    s.preload = vec!["bcast".into(), "time".into()];
    s
}

pub fn example_app(name: &str) -> ServiceSpec {
    spec(&root().join("lua/apps"), name)
}

/// The real Hub the Registry posts to, for `workers` workers.
pub fn hub(workers: usize) -> Arc<Hub> {
    Arc::new(Hub::new(workers, 1024).expect("hub"))
}
