//! Kernel module selection: from module names to the closure the image needs, through
//! the kernel's `modules.dep` (hard dependencies), `modules.softdep` (pre/post soft
//! dependencies, resolved through `modules.alias` when they name an alias such as
//! `crypto-crc32c`) and `modules.builtin` (built-in modules need no file), in a load
//! order where every module follows its dependencies (ties broken by name, so the order
//! is reproducible).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Errors resolving modules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    /// A metadata file is missing or unreadable.
    #[error("{path}: {why}")]
    Metadata {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A requested module exists neither as a file nor built in.
    #[error("unknown module {name:?}: not in {dir}/modules.dep nor built in (check the name with `modinfo -k {version} {name}`)")]
    Unknown {
        /// Name asked for.
        name: String,
        /// Modules directory.
        dir: String,
        /// Kernel version.
        version: String,
    },
    /// A dependency cycle (a corrupt modules.dep).
    #[error("dependency cycle through module {0:?} in modules.dep")]
    Cycle(String),
}

/// The canonical module name: file stem with '-' as '_'.
pub fn canonical(name: &str) -> String {
    let stem = name.rsplit('/').next().unwrap_or(name);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suf| stem.strip_suffix(suf))
        .unwrap_or(stem);
    stem.replace('-', "_")
}

/// One module in the closure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Module {
    /// Canonical name.
    pub name: String,
    /// Path relative to the modules directory (e.g. `kernel/drivers/virtio/virtio.ko`).
    pub path: String,
}

/// A kernel's module metadata.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    version: String,
    /// name → (relative path, hard deps as names)
    modules: BTreeMap<String, (String, Vec<String>)>,
    /// name → (pre, post) soft deps, as written (names or aliases)
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// exact alias → module names
    aliases: BTreeMap<String, BTreeSet<String>>,
    builtin: BTreeSet<String>,
}

fn read(dir: &Path, file: &str, required: bool) -> Result<String, ModuleError> {
    let p = dir.join(file);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ModuleError::Metadata {
            path: p.display().to_string(),
            why: e.to_string(),
        }),
    }
}

impl ModuleIndex {
    /// Reads `/lib/modules/<version>`-style metadata from `dir` (the version is its
    /// last path component).
    pub fn load(dir: &Path) -> Result<Self, ModuleError> {
        let version = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        let mut idx = Self {
            dir: dir.to_path_buf(),
            version,
            ..Self::default()
        };
        for line in read(dir, "modules.dep", true)?.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(canonical).collect();
            idx.modules
                .insert(canonical(path), (path.trim().to_owned(), deps));
        }
        for line in read(dir, "modules.softdep", false)?.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(m) = words.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut into_pre = true;
            for w in words {
                match w {
                    "pre:" => into_pre = true,
                    "post:" => into_pre = false,
                    w if into_pre => pre.push(w.to_owned()),
                    w => post.push(w.to_owned()),
                }
            }
            let e = idx.softdeps.entry(canonical(m)).or_default();
            e.0.extend(pre);
            e.1.extend(post);
        }
        for line in read(dir, "modules.alias", false)?.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(m)) =
                (words.next(), words.next(), words.next())
            {
                if !alias.contains(['*', '?', '[']) {
                    idx.aliases
                        .entry(alias.to_owned())
                        .or_default()
                        .insert(canonical(m));
                }
            }
        }
        for line in read(dir, "modules.builtin", false)?.lines() {
            if !line.trim().is_empty() {
                idx.builtin.insert(canonical(line.trim()));
            }
        }
        Ok(idx)
    }

    /// Kernel version (the directory name).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether a module is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    fn resolve_soft(&self, w: &str) -> Vec<String> {
        let c = canonical(w);
        if self.modules.contains_key(&c) {
            return vec![c];
        }
        self.aliases
            .get(w)
            .map(|s| {
                s.iter()
                    .filter(|m| self.modules.contains_key(*m))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The modules to put in the image for `names`, in load order. Built-in modules
    /// are skipped; unknown ones are an error.
    pub fn closure(&self, names: &[String]) -> Result<Vec<Module>, ModuleError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut sorted: Vec<String> = names.iter().map(|n| canonical(n)).collect();
        sorted.sort();
        sorted.dedup();
        for n in sorted {
            if !self.modules.contains_key(&n) {
                if self.builtin.contains(&n) {
                    continue;
                }
                return Err(ModuleError::Unknown {
                    name: n,
                    dir: self.dir.display().to_string(),
                    version: self.version.clone(),
                });
            }
            self.visit(&n, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        n: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), ModuleError> {
        if done.contains(n) {
            return Ok(());
        }
        if !stack.insert(n.to_owned()) {
            return Err(ModuleError::Cycle(n.to_owned()));
        }
        let Some((path, deps)) = self.modules.get(n) else {
            stack.remove(n);
            return Ok(());
        };
        let (pre, post) = self.softdeps.get(n).cloned().unwrap_or_default();
        let mut before: Vec<String> = deps.clone();
        for w in &pre {
            before.extend(self.resolve_soft(w));
        }
        before.sort();
        before.dedup();
        for d in before {
            if d != n {
                self.visit(&d, done, stack, order)?;
            }
        }
        stack.remove(n);
        if done.insert(n.to_owned()) {
            order.push(Module {
                name: n.to_owned(),
                path: path.clone(),
            });
        }
        let mut after: Vec<String> = post.iter().flat_map(|w| self.resolve_soft(w)).collect();
        after.sort();
        after.dedup();
        for d in after {
            self.visit(&d, done, stack, order)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(
        dep: &str,
        softdep: &str,
        alias: &str,
        builtin: &str,
    ) -> (tempfile::TempDir, ModuleIndex) {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("6.1.0-test");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("modules.dep"), dep).unwrap();
        std::fs::write(m.join("modules.softdep"), softdep).unwrap();
        std::fs::write(m.join("modules.alias"), alias).unwrap();
        std::fs::write(m.join("modules.builtin"), builtin).unwrap();
        let idx = ModuleIndex::load(&m).unwrap();
        (d, idx)
    }

    const DEP: &str = "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/d-x.ko:\nkernel/e.ko: kernel/a.ko\nkernel/crc.ko:\n";

    fn names(v: &[Module]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let (_d, idx) = index(DEP, "", "", "");
        let c = idx.closure(&["e".into()]).unwrap();
        assert_eq!(names(&c), ["c", "b", "a", "e"]);
        assert_eq!(c[0].path, "kernel/c.ko");
    }

    #[test]
    fn softdeps_and_aliases() {
        let (_d, idx) = index(
            DEP,
            "softdep a pre: crypto-crc post: d-x\n",
            "alias crypto-crc crc\nalias pci:v*d* a\n",
            "",
        );
        let c = idx.closure(&["a".into()]).unwrap();
        assert_eq!(names(&c), ["c", "b", "crc", "a", "d_x"]);
    }

    #[test]
    fn builtin_and_unknown() {
        let (_d, idx) = index(DEP, "", "", "kernel/drivers/virtio/virtio.ko\n");
        assert!(idx.closure(&["virtio".into()]).unwrap().is_empty());
        assert!(matches!(
            idx.closure(&["nope".into()]),
            Err(ModuleError::Unknown { .. })
        ));
        assert!(idx.is_builtin("virtio"));
    }

    #[test]
    fn cycles_are_refused() {
        let (_d, idx) = index(
            "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
            "",
            "",
            "",
        );
        assert!(matches!(
            idx.closure(&["a".into()]),
            Err(ModuleError::Cycle(_))
        ));
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical("kernel/net/vmw_vsock/vmw-vsock.ko"), "vmw_vsock");
        assert_eq!(canonical("x.ko.xz"), "x");
        assert_eq!(canonical("virtio-pci"), "virtio_pci");
    }

    #[test]
    fn debian_kernel_virtio_closure() {
        let Some(dir) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path())
        else {
            panic!("no /lib/modules: run scripts/setup.sh (linux-image-amd64)");
        };
        let idx = ModuleIndex::load(&dir).unwrap();
        let c = idx
            .closure(&[
                "virtio_pci".into(),
                "virtio_console".into(),
                "vmw_vsock_virtio_transport".into(),
            ])
            .unwrap();
        let n = names(&c);
        let pos = |m: &str| {
            n.iter()
                .position(|x| *x == m)
                .unwrap_or_else(|| panic!("{m} missing from {n:?}"))
        };
        assert!(pos("virtio_ring") < pos("virtio_pci"));
        assert!(pos("vsock") < pos("vmw_vsock_virtio_transport"));
        assert!(pos("vmw_vsock_virtio_transport_common") < pos("vmw_vsock_virtio_transport"));
        for m in &c {
            assert!(dir.join(&m.path).is_file(), "{}", m.path);
        }
    }
}
