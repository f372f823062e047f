//! What a build tells its user besides its result: warnings on stderr (and in the
//! log), one line each.

/// A problem that does not stop the build (also recorded in release.json).
pub fn warn(msg: &str) {
    tracing::warn!("{msg}");
    eprintln!("cocos-hal: warning: {msg}");
}
