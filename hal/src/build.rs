//! Building a HAL image from a [`Spec`]: kernel, initramfs (reproducible cpio +
//! pinned compression) and release.json, written to the output directory only when
//! everything succeeded (staged in a sibling temporary directory, then renamed in).
//!
//! The initramfs holds: `init` (a shell script, below), busybox-static at
//! `bin/busybox` (applet links are made at boot), `dev/console`, the module closure
//! under `lib/modules/<release>/` (decompressed: [`module_file`]) with a
//! `modules.dep` for exactly those modules,
//! `etc/cocos/modules` (load order), and the spec's extra files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::compress;
use crate::cpio::{Archive, Kind};
use crate::kernel::{self, ResolvedKernel};
use crate::modules::{Module, ModuleIndex};
use crate::release;
use crate::spec::Spec;

pub use crate::digest::sha256_hex;
pub use crate::error::BuildError;
pub use crate::report::warn;

/// The init script (hal/rootfs/init, shared with the buildroot tree's rootfs overlay).
/// It mounts the pseudo file systems, installs busybox applets, loads the modules in
/// `etc/cocos/modules` order, then runs the agent if the image has one
/// (`/bin/cocos-agent`), else a rescue shell on the console.
pub const INIT: &str = include_str!("../rootfs/init");

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Options of one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory.
    pub out: PathBuf,
    /// Download cache for kernel packages.
    pub cache: PathBuf,
    /// Refuse to build when the lock file would change.
    pub locked: bool,
    /// SOURCE_DATE_EPOCH, if set.
    pub source_date_epoch: Option<String>,
    /// Keys and host facts for the files published beside release.json.
    pub publish: std::sync::Arc<crate::published::PublishOptions>,
}

/// What a build produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildResult {
    /// The release manifest (also written as release.json).
    pub release: cocos_proto::release::Manifest,
    /// Output directory.
    pub out: PathBuf,
    /// The files published beside release.json (CoRIMs, cocos policies, ID blocks).
    pub published: Vec<String>,
}

fn progress(msg: &str) {
    tracing::info!("{msg}");
    eprintln!("cocos-hal: {msg}");
}

/// The initramfs contents for a spec and a resolved kernel.
pub fn archive(spec: &Spec, k: &ResolvedKernel) -> Result<(Archive, Vec<Module>), BuildError> {
    let mut a = Archive::new();
    a.add("init", Some(0o755), Kind::File(INIT.as_bytes().to_vec()))?;
    let busybox = spec.resolve(spec.busybox.as_deref().unwrap_or(Path::new("/bin/busybox")));
    let bb = std::fs::read(&busybox).map_err(io(&busybox))?;
    a.add("bin/busybox", Some(0o755), Kind::File(bb))?;
    a.add(
        "dev/console",
        Some(0o600),
        Kind::CharDev { major: 5, minor: 1 },
    )?;
    match spec.agent.as_deref() {
        None => {}
        Some("build") => {
            progress("building cocos-agent (static)");
            a.add(
                "bin/cocos-agent",
                Some(0o755),
                Kind::File(crate::agent::build(&spec.dir)?),
            )?;
        }
        Some(p) => {
            let src = spec.resolve(Path::new(p));
            let data = std::fs::read(&src).map_err(io(&src))?;
            a.add("bin/cocos-agent", Some(0o755), Kind::File(data))?;
        }
    }

    let mut modules = Vec::new();
    if !spec.modules.is_empty() {
        let dir = k.modules_dir.as_ref().ok_or(BuildError::NoModulesDir)?;
        let idx = ModuleIndex::load(dir)?;
        modules = idx.closure(&spec.modules)?;
        let base = format!("lib/modules/{}", k.release);
        let mut dep = String::new();
        let mut order = String::new();
        for m in &modules {
            let src = dir.join(&m.path);
            let data = std::fs::read(&src).map_err(io(&src))?;
            let (path, data) = module_file(&m.path, data).map_err(io(&src))?;
            a.add(&format!("{base}/{path}"), Some(0o644), Kind::File(data))?;
            dep.push_str(&format!("{path}:\n"));
            order.push_str(&path);
            order.push('\n');
        }
        a.add(
            &format!("{base}/modules.dep"),
            Some(0o644),
            Kind::File(dep.into_bytes()),
        )?;
        a.add(
            "etc/cocos/modules",
            Some(0o644),
            Kind::File(order.into_bytes()),
        )?;
    }
    for f in &spec.files {
        let src = spec.resolve(&f.src);
        let data = std::fs::read(&src).map_err(io(&src))?;
        // Spec::validate already refused bad modes.
        a.add(&f.dest, f.mode_bits().ok().flatten(), Kind::File(data))?;
    }
    Ok((a, modules))
}

/// Largest module accepted after decompression.
const MAX_MODULE: u64 = 256 << 20;

/// A module as the image stores it: compressed modules (`.ko.xz`, as Debian 13 ships
/// them; `.ko.zst`, `.ko.gz`) are decompressed and renamed `.ko`. busybox's insmod
/// could read `.ko.xz` itself, but only after the kernel's `finit_module` has refused
/// the file with "Invalid ELF header magic" on the console for every module at every
/// boot; plain modules load at the first attempt and need no decompressor in the image.
/// Decompression is a function of the bytes, so the image stays reproducible.
pub fn module_file(path: &str, data: Vec<u8>) -> std::io::Result<(String, Vec<u8>)> {
    let stem = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suf| path.strip_suffix(suf));
    let (path, data) = match stem {
        Some(stem) => (
            format!("{stem}.ko"),
            compress::decompress(&data, MAX_MODULE)?,
        ),
        None => (path.to_owned(), data),
    };
    if !data.starts_with(b"\x7fELF") {
        return Err(std::io::Error::other(
            "not an ELF kernel module (nor an xz, zstd or gzip compressed one)",
        ));
    }
    Ok((path, data))
}

/// Builds the image described by `spec` into `opts.out`.
pub fn build(spec: &Spec, opts: &BuildOptions) -> Result<BuildResult, BuildError> {
    // An output that cannot be a directory fails now, not after minutes of building.
    if std::fs::metadata(&opts.out).is_ok_and(|m| !m.is_dir()) {
        return Err(BuildError::OutNotADirectory(opts.out.display().to_string()));
    }
    let compression = spec.compression()?;
    let mtime = spec.mtime(opts.source_date_epoch.as_deref())?;
    progress("resolving the kernel");
    let k = kernel::resolve(spec, &opts.cache, opts.locked)?;
    progress(&format!("kernel {} ({})", k.release, k.image.display()));
    let (a, modules) = archive(spec, &k)?;
    progress(&format!(
        "writing the initramfs ({} entries, {} modules)",
        a.len(),
        modules.len()
    ));
    let mut raw = Vec::new();
    a.write(&mut raw, mtime)
        .map_err(io(Path::new("initramfs")))?;
    let packed = compress::compress(&raw, compression).map_err(io(Path::new("initramfs")))?;
    let kernel_bytes = std::fs::read(&k.image).map_err(io(&k.image))?;

    let initrd_name = format!("initramfs.cpio{}", compression.suffix());
    progress("computing measurements");
    let rel = release::manifest(
        spec,
        &k,
        &modules,
        compression,
        mtime,
        ("vmlinuz", &kernel_bytes),
        (&initrd_name, &packed),
    )?;

    let published = crate::published::files(&rel, &opts.publish)?;
    for w in rel
        .kernel
        .tee
        .get("warnings")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
    {
        warn(w);
    }

    // Stage everything beside the output, then move it in.
    let parent = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let stage = parent.join(format!(
        ".{}.cocos-hal-{}",
        opts.out
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| -> Result<(), BuildError> {
        std::fs::create_dir_all(&stage).map_err(io(&stage))?;
        let write = |name: &str, data: &[u8]| -> Result<(), BuildError> {
            let p = stage.join(name);
            let mut f = std::fs::File::create(&p).map_err(io(&p))?;
            f.write_all(data).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))
        };
        write("vmlinuz", &kernel_bytes)?;
        write(&initrd_name, &packed)?;
        write("release.json", &release::to_bytes(&rel)?)?;
        for (name, data) in &published {
            write(name, data)?;
        }
        std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
        let names = ["vmlinuz", initrd_name.as_str(), "release.json"]
            .into_iter()
            .chain(published.iter().map(|(n, _)| n.as_str()));
        for name in names {
            let to = opts.out.join(name);
            std::fs::rename(stage.join(name), &to).map_err(io(&to))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&stage);
    result?;
    progress(&format!("wrote {}", opts.out.display()));
    Ok(BuildResult {
        release: rel,
        out: opts.out.clone(),
        published: published.into_iter().map(|(n, _)| n).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::compress::{compress, Compression};

    /// Debian 13's modules are .ko.xz: the image holds them decompressed, as .ko, and
    /// lists them by those names in modules.dep and etc/cocos/modules.
    #[test]
    fn compressed_modules_are_decompressed() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("6.12.0-test");
        std::fs::create_dir_all(m.join("kernel")).unwrap();
        std::fs::write(
            m.join("modules.dep"),
            "kernel/a.ko.xz: kernel/b.ko.zst kernel/c.ko\nkernel/b.ko.zst: kernel/c.ko\nkernel/c.ko:\n",
        )
        .unwrap();
        let elf = |name: &str| format!("\x7fELF {name}").into_bytes();
        let put = |name: &str, how| {
            std::fs::write(m.join(name), compress(&elf(name), how).unwrap()).unwrap()
        };
        put("kernel/a.ko.xz", Compression::Xz);
        put("kernel/b.ko.zst", Compression::Zstd);
        put("kernel/c.ko", Compression::None);
        std::fs::write(d.path().join("busybox"), b"bb").unwrap();
        let spec = Spec::parse(
            "name = \"t\"\nversion = \"1\"\ncmdline = \"quiet\"\nmodules = [\"a\"]\nbusybox = \"busybox\"\n[kernel]\npath = \"vmlinuz\"\nmodules_dir = \"6.12.0-test\"\n",
            &d.path().join("spec.toml"),
        )
        .unwrap();
        let k = ResolvedKernel {
            image: d.path().join("vmlinuz"),
            modules_dir: Some(m.clone()),
            release: "6.12.0-test".into(),
            source: serde_json::Value::Null,
            config: None,
        };
        let (a, modules) = archive(&spec, &k).unwrap();
        assert_eq!(
            modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        let entries = a.entries().unwrap();
        let file = |p: &str| match entries.iter().find(|e| e.path == p).map(|e| &e.kind) {
            Some(Kind::File(data)) => data.clone(),
            other => panic!("{p}: {other:?}"),
        };
        let base = "lib/modules/6.12.0-test";
        assert_eq!(file(&format!("{base}/kernel/a.ko")), elf("kernel/a.ko.xz"));
        assert_eq!(file(&format!("{base}/kernel/b.ko")), elf("kernel/b.ko.zst"));
        assert_eq!(file(&format!("{base}/kernel/c.ko")), elf("kernel/c.ko"));
        assert!(!entries.iter().any(|e| e.path.ends_with(".xz")));
        assert_eq!(
            file("etc/cocos/modules"),
            b"kernel/c.ko\nkernel/b.ko\nkernel/a.ko\n"
        );
        assert_eq!(
            file(&format!("{base}/modules.dep")),
            b"kernel/c.ko:\nkernel/b.ko:\nkernel/a.ko:\n"
        );
        // Same input, same archive.
        let (again, _) = archive(&spec, &k).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write(&mut x, 0).unwrap();
        again.write(&mut y, 0).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn module_file_refuses_non_modules() {
        let gz = compress(b"\x7fELF x", Compression::Gzip).unwrap();
        assert_eq!(
            module_file("k/x.ko.gz", gz).unwrap(),
            ("k/x.ko".to_owned(), b"\x7fELF x".to_vec())
        );
        let e = module_file("k/x.ko.xz", b"not xz".to_vec()).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{e}");
        assert!(module_file("k/x.ko.xz", vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1]).is_err());
    }
}
