//! `cocos-measure tdx`: MRTD and RTMR0–2 of a TDX guest booted by QEMU with a kernel,
//! as text, JSON, or the expected event log (`--events`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use cocos_measure::bzimage::KernelSetup;
use cocos_measure::edk2::Edk2Release;
use cocos_measure::efivar::EfiVars;
use cocos_measure::machine::parse_memory;
use cocos_measure::rtmr::{AcpiBlobs, InitrdOption, Platform, FW_CFG_MEASURED};
use cocos_measure::tdx_launch::{StubMeasures, TdxLaunch, TdxMeasurement, TdxOptions};
use cocos_measure::tdx_rules::{QemuVersion, Source, Stated};
use cocos_measure::{BootFiles, QemuBoot, TdxBoot};
use serde_json::{json, Value};

#[derive(Clone, Copy, ValueEnum)]
enum SetupArg {
    /// The setup header QEMU (<= 10.1) patches into its legacy kernel blob
    Patched,
    /// The file as is (QEMU 10.2+, or QEMU 10.0+ with edk2 >= stable202502 reading etc/boot/kernel)
    Unmodified,
}

#[derive(Clone, Copy, ValueEnum)]
enum InitrdArg {
    /// "<cmdline> initrd=initrd" (edk2 before stable202508: Debian 12/13, Ubuntu 24.04)
    Append,
    /// "initrd=initrd <cmdline>" (edk2 stable202508 and later)
    Prepend,
}

#[derive(Clone, Copy, ValueEnum)]
enum FirmwareArg {
    /// From the firmware's drivers: only TdTcg2Dxe extends RTMRs
    Auto,
    /// The firmware extends RTMR0-2
    Yes,
    /// It does not: RTMR0-2 are zero
    No,
}

#[derive(Clone, Copy, ValueEnum)]
enum StubArg {
    /// From the kernel version: Linux 6.9+ measures into RTMR2
    Auto,
    /// The EFI stub logs the command line and initrd into RTMR2
    Yes,
    /// It does not: RTMR2 stays zero
    No,
}

/// Arguments of `cocos-measure tdx`.
#[derive(Args)]
pub struct TdxCmd {
    /// TDX firmware (TDVF/OVMF image with TDX metadata), as passed to QEMU
    #[arg(long, visible_alias = "ovmf", value_name = "FILE")]
    firmware: PathBuf,
    /// Kernel (bzImage with EFI stub) passed with -kernel
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initrd passed with -initrd
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line passed with -append (one that starts with `-`: --append=VALUE)
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    append: Option<String>,
    /// Guest memory as for QEMU -m (2G, 4096M, 8192 = MiB)
    #[arg(long, value_name = "SIZE", default_value = "2G")]
    memory: String,
    /// vCPUs (recorded only: no register depends on it, but the ACPI dump must come from a guest with this count)
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// QEMU's etc/acpi/tables blob (needed for RTMR0)
    #[arg(long, value_name = "FILE", requires_all = ["acpi_rsdp", "acpi_loader"])]
    acpi_tables: Option<PathBuf>,
    /// QEMU's etc/acpi/rsdp blob
    #[arg(long, value_name = "FILE", requires_all = ["acpi_tables", "acpi_loader"])]
    acpi_rsdp: Option<PathBuf>,
    /// QEMU's etc/table-loader blob
    #[arg(long, value_name = "FILE", requires_all = ["acpi_tables", "acpi_rsdp"])]
    acpi_loader: Option<PathBuf>,
    /// Copy of a guest's /sys/firmware/efi/efivars (BootOrder, Boot####, PK/KEK/db/dbx if set; needed for RTMR0)
    #[arg(long, value_name = "DIR")]
    efivars: Option<PathBuf>,
    /// A fw_cfg item OVMF (edk2 >= stable202505) measures into RTMR0, as NAME=FILE; repeatable
    #[arg(long = "fw-cfg", value_name = "NAME=FILE")]
    fw_cfg: Vec<String>,
    /// Two-pass MRTD (older QEMU/KVM: all pages added, then extended, per section)
    #[arg(long)]
    two_pass: bool,
    /// The QEMU that runs the guest, as `qemu-system-x86_64 --version` prints it (decides which kernel bytes are measured; default: 10.1, the first upstream QEMU with TDX)
    #[arg(long, value_name = "X.Y", value_parser = QemuVersion::from_str)]
    qemu_version: Option<QemuVersion>,
    /// The firmware's edk2 release (YYYY.MM), for firmware that carries no version string
    #[arg(long, value_name = "YYYY.MM", value_parser = Edk2Release::from_str)]
    edk2_version: Option<Edk2Release>,
    /// Which kernel bytes OVMF measures (default: derived from --qemu-version and the firmware)
    #[arg(long, value_enum)]
    kernel_setup: Option<SetupArg>,
    /// Where OVMF puts "initrd=initrd" in the kernel's LoadOptions (default: read from the firmware)
    #[arg(long, value_enum)]
    initrd_option: Option<InitrdArg>,
    /// Whether the firmware extends RTMRs at all (auto: only with the TdTcg2Dxe driver)
    #[arg(long, value_enum, default_value = "auto")]
    firmware_measures: FirmwareArg,
    /// Whether the kernel's EFI stub measures the command line and initrd into RTMR2
    #[arg(long, value_enum, default_value = "auto")]
    stub_measures: StubArg,
    /// Print the expected event log (register, event type, digest, what it is)
    #[arg(long)]
    events: bool,
    /// JSON output (registers, events, inputs, settings)
    #[arg(long)]
    json: bool,
}

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>> {
    crate::cli::read_bounded(path, what, 64 << 20, "; QEMU fw_cfg blobs are far smaller")
}

fn platform(c: &TdxCmd) -> Result<Platform> {
    let acpi = match (&c.acpi_tables, &c.acpi_rsdp, &c.acpi_loader) {
        (Some(t), Some(r), Some(l)) => Some(AcpiBlobs {
            tables: read_small(t, "--acpi-tables")?,
            rsdp: read_small(r, "--acpi-rsdp")?,
            loader: read_small(l, "--acpi-loader")?,
        }),
        _ => None,
    };
    let efivars = match &c.efivars {
        Some(d) => {
            if !d.is_dir() {
                bail!(
                    "--efivars {}: not a directory (copy the guest's /sys/firmware/efi/efivars)",
                    d.display()
                );
            }
            Some(EfiVars::from_efivarfs(d)?)
        }
        None => None,
    };
    let mut fw_cfg = Vec::new();
    for item in &c.fw_cfg {
        let Some((name, file)) = item.split_once('=') else {
            bail!("--fw-cfg {item:?}: expected NAME=FILE, e.g. BootMenu=/path/to/by_key/14/raw");
        };
        if !FW_CFG_MEASURED.contains(&name) {
            bail!(
                "--fw-cfg {name:?}: OVMF measures only {}",
                FW_CFG_MEASURED.join(", ")
            );
        }
        fw_cfg.push((name.to_owned(), read_small(Path::new(file), "--fw-cfg")?));
    }
    Ok(Platform {
        acpi,
        efivars,
        fw_cfg,
    })
}

fn launch(c: &TdxCmd) -> Result<TdxLaunch> {
    let memory = parse_memory(&c.memory).map_err(anyhow::Error::msg)?;
    if c.cpus == 0 || c.cpus > 4096 {
        bail!("--cpus must be between 1 and 4096, got {}", c.cpus);
    }
    Ok(TdxLaunch {
        memory,
        two_pass: c.two_pass,
        stub_measures: match c.stub_measures {
            StubArg::Auto => StubMeasures::Auto,
            StubArg::Yes => StubMeasures::Yes,
            StubArg::No => StubMeasures::No,
        },
        stated: Stated {
            qemu: c.qemu_version,
            edk2: c.edk2_version,
            kernel_setup: c.kernel_setup.map(|k| match k {
                SetupArg::Patched => KernelSetup::Patched,
                SetupArg::Unmodified => KernelSetup::Unmodified,
            }),
            initrd_option: c.initrd_option.map(|o| match o {
                InitrdArg::Append => InitrdOption::Append,
                InitrdArg::Prepend => InitrdOption::Prepend,
            }),
            extends_rtmrs: match c.firmware_measures {
                FirmwareArg::Auto => None,
                FirmwareArg::Yes => Some(true),
                FirmwareArg::No => Some(false),
            },
        },
    })
}

/// Runs `cocos-measure tdx`.
pub fn run(c: TdxCmd) -> Result<()> {
    let launch = launch(&c)?;
    let platform = platform(&c)?;
    let cmdline = c.append.clone().unwrap_or_default();
    let files = BootFiles {
        firmware: &c.firmware,
        kernel: c.kernel.as_deref(),
        initrd: c.initrd.as_deref(),
    };
    let boot = QemuBoot::load_tdx(&files, &cmdline, &launch)?;
    let (opts, _) = launch.options(boot.firmware());
    let m = boot.measure(&cmdline, &platform, &launch)?;
    if c.json {
        let v = to_json(&c, &opts, &m, &boot)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("MRTD:  {}", hex::encode(m.mrtd));
    for (i, r) in m.rtmr.iter().enumerate() {
        match r {
            Some(d) => println!("RTMR{i}: {}", hex::encode(d)),
            None => println!("RTMR{i}: not computed"),
        }
    }
    if c.events {
        println!();
        println!("expected event log (boot order):");
        for e in &m.events {
            println!(
                "  RTMR{} {:<34} {}  {}",
                e.rtmr,
                e.event_type.name(),
                hex::encode(e.digest),
                e.what
            );
        }
    }
    for (i, why) in &m.unavailable {
        let flags = match i {
            0 => " (--acpi-tables, --acpi-rsdp, --acpi-loader and --efivars)",
            _ => "",
        };
        eprintln!("cocos-measure: RTMR{i} not computed: {why}{flags}");
    }
    for n in &m.notes {
        eprintln!("cocos-measure: note: {n}");
    }
    for r in m.rules.iter().filter(|r| r.source != Source::Flag) {
        eprintln!("cocos-measure: {} = {}: {}", r.setting, r.value, r.why);
    }
    Ok(())
}

fn to_json(c: &TdxCmd, opts: &TdxOptions, m: &TdxMeasurement, boot: &TdxBoot) -> Result<Value> {
    let mut v = serde_json::to_value(m)?;
    let fw = boot.firmware();
    let rest = json!({
        "inputs": {
            "firmware": {"path": c.firmware, "size": fw.firmware().size(), "edk2": fw.behaviour()},
            "kernel": boot.kernel().map(|k| json!({
                "path": c.kernel, "size": k.len(),
                "boot_protocol": format!("{}.{:02}", k.header().protocol >> 8, k.header().protocol & 0xff),
                "version": k.header().version,
            })),
            "initrd": boot.initrd().map(|i| json!({"path": c.initrd, "size": i.size, "sha384": hex::encode(i.sha384)})),
            "cmdline": c.append,
        },
        "settings": {
            "memory": opts.memory,
            "cpus": c.cpus,
            "mrtd": if opts.two_pass { "two-pass" } else { "single-pass" },
            "kernel_setup": opts.kernel_setup,
            "initrd_option": opts.initrd_option,
            "stub_measures": opts.stub_measures,
            "extends_rtmrs": opts.extends_rtmrs,
            "qemu_version": c.qemu_version,
            "edk2_version": c.edk2_version.map(|e| e.to_string()),
        },
    });
    if let (Some(o), Value::Object(r)) = (v.as_object_mut(), rest) {
        o.extend(r);
    }
    Ok(v)
}
