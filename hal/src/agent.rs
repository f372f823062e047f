//! Building `cocos-agent` for the image from the workspace that holds the spec: a
//! static x86_64 glibc binary (`crt-static`), stripped, with the checkout's and
//! Cargo home's paths remapped so the bytes do not depend on where the repository is
//! cloned. A separate target directory keeps these flags away from normal builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::BuildError;

/// The target triple the agent is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace root above `dir` (the first Cargo.toml with a `[workspace]` table).
pub fn workspace_root(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The command that builds the agent, with its environment.
pub fn command(root: &Path, cargo_home: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root)
        .args(["build", "--release", "--locked", "-q", "-p", "cocos-agent", "--bin", "cocos-agent", "--target", TARGET])
        .arg("--target-dir")
        .arg(root.join("target/agent-static"))
        .env(
            "RUSTFLAGS",
            format!(
                "-C target-feature=+crt-static --remap-path-prefix={}=/cocos --remap-path-prefix={}=/cargo",
                root.display(),
                cargo_home.display()
            ),
        )
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c
}

/// Builds the agent and returns its bytes.
pub fn build(spec_dir: &Path) -> Result<Vec<u8>, BuildError> {
    let root = workspace_root(spec_dir).ok_or_else(|| {
        BuildError::Agent(format!(
            "agent = \"build\": no Cargo workspace above {}",
            spec_dir.display()
        ))
    })?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let out = command(&root, &cargo_home)
        .output()
        .map_err(|e| BuildError::Io {
            path: "cargo".into(),
            source: e,
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BuildError::Agent(format!(
            "building it failed: {}",
            err.lines()
                .filter(|l| l.contains("error"))
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        )));
    }
    let bin = root
        .join("target/agent-static")
        .join(TARGET)
        .join("release/cocos-agent");
    std::fs::read(&bin).map_err(|e| BuildError::Io {
        path: bin.display().to_string(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_remaps_paths_and_links_statically() {
        let c = command(Path::new("/src/cocos"), Path::new("/home/u/.cargo"));
        let flags = c
            .get_envs()
            .find(|(k, _)| *k == "RUSTFLAGS")
            .and_then(|(_, v)| v)
            .unwrap();
        let flags = flags.to_str().unwrap();
        assert!(flags.contains("+crt-static"));
        assert!(flags.contains("--remap-path-prefix=/src/cocos=/cocos"));
        assert!(flags.contains("--remap-path-prefix=/home/u/.cargo=/cargo"));
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_str().unwrap().to_owned())
            .collect();
        assert!(args.contains(&"--locked".to_owned()) && args.contains(&TARGET.to_owned()));
    }

    #[test]
    fn finds_this_workspace() {
        let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(root.join("hal").is_dir());
    }
}
