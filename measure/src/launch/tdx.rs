//! TDX through the facade: [`QemuBoot::load_tdx`] loads for one known launch with
//! the work split over two cores, and a prepared boot ([`TdxBoot`]) measures launches
//! into [`TdxMeasurement`]s (MRTD, RTMR0–2, event log, notes, rules).

use std::sync::Arc;

use super::{
    hash_file, io_err, joined, needs_kernel, read_kernel, with_path, BootFiles, Prepared, QemuBoot,
    Tee,
};
use crate::bzimage::LinuxLoad;
use crate::inputs::read_firmware;
use crate::rtmr::Platform;
use crate::tdx_launch::{
    measure_launch, TdxFirmware, TdxInitrd, TdxKernel, TdxLaunch, TdxMeasurement,
};
use crate::MeasureError;

impl QemuBoot {
    /// TDX, loaded for one known launch (what `cocos-measure tdx` does): as
    /// [`QemuBoot::load`], but the firmware's drivers are read only if the launch's
    /// stated settings leave a behaviour open, and the work is split so that neither
    /// core waits: this thread reads the firmware, settles the launch's options (the
    /// drivers, if needed) and computes its kernel digest; the other reads the kernel and
    /// hashes the initrd; MRTD goes to whichever is free first. [`TdxBoot::measure`]
    /// then finds both digests cached.
    pub fn load_tdx(
        files: &BootFiles<'_>,
        cmdline: &str,
        launch: &TdxLaunch,
    ) -> Result<TdxBoot, MeasureError> {
        needs_kernel(files.kernel.is_some(), files.initrd.is_some())?;
        // The initrd's size places it in guest memory (the patched header records
        // where); a file that changes size meanwhile only costs a second digest.
        let initrd_size = match files.initrd {
            Some(p) => Some(std::fs::metadata(p).map_err(io_err(p))?.len()),
            None => None,
        };
        std::thread::scope(|s| {
            let (kernel_tx, kernel_rx) = std::sync::mpsc::channel::<TdxKernel>();
            let (fw_tx, fw_rx) = std::sync::mpsc::channel::<TdxFirmware>();
            let other = s.spawn(move || -> Result<_, MeasureError> {
                let kernel = files.kernel.map(|p| read_kernel(p, Tee::Tdx)).transpose()?;
                if let Some(k) = kernel.as_ref().and_then(|k| k.tdx.clone()) {
                    let _ = kernel_tx.send(k);
                }
                drop(kernel_tx);
                let initrd = files.initrd.map(|p| hash_file(p, Tee::Tdx)).transpose()?;
                if let Ok(fw) = fw_rx.recv() {
                    fw.mrtd(launch.two_pass)?;
                }
                Ok((kernel, initrd))
            });
            let firmware_side = read_firmware(files.firmware).map(Arc::new).and_then(|fw| {
                let t = TdxFirmware::new(Arc::clone(&fw)).map_err(|e| with_path(e, files))?;
                let _ = fw_tx.send(t.clone());
                let (opts, _) = launch.options(&t);
                if let Ok(k) = kernel_rx.recv() {
                    let load = LinuxLoad {
                        memory: opts.memory,
                        initrd_size,
                        cmdline,
                    };
                    // An error here is the measurement's to report: it runs the
                    // same checks again.
                    let _ = k.authenticode(&load, opts.kernel_setup);
                }
                // MRTD here too: whichever thread is free first computes it (the
                // other finds it cached).
                t.mrtd(launch.two_pass)?;
                Ok((fw, t))
            });
            drop(fw_tx);
            let inputs = joined(Some(other));
            let (firmware, t) = firmware_side?;
            let (kernel, initrd) = inputs?.unwrap_or((None, None));
            Self {
                firmware,
                kernel,
                initrd,
                prepared: Prepared::Tdx(Box::new(t)),
            }
            .tdx()
        })
    }
}

/// TDX state for one boot: the firmware (MRTD cached, drivers read), kernel, initrd.
#[derive(Debug, Clone)]
pub struct TdxBoot {
    pub(super) fw: TdxFirmware,
    pub(super) kernel: Option<TdxKernel>,
    pub(super) initrd: Option<TdxInitrd>,
}

impl TdxBoot {
    /// The firmware.
    pub fn firmware(&self) -> &TdxFirmware {
        &self.fw
    }

    /// The kernel.
    pub fn kernel(&self) -> Option<&TdxKernel> {
        self.kernel.as_ref()
    }

    /// The initrd's size and SHA-384.
    pub fn initrd(&self) -> Option<&TdxInitrd> {
        self.initrd.as_ref()
    }

    /// MRTD and RTMR0–2 of one launch, with the expected event log, the notes and the
    /// rule behind each QEMU/edk2 behaviour.
    pub fn measure(
        &self,
        cmdline: &str,
        platform: &Platform,
        launch: &TdxLaunch,
    ) -> Result<TdxMeasurement, MeasureError> {
        measure_launch(
            &self.fw,
            self.kernel.as_ref(),
            self.initrd.as_ref(),
            cmdline,
            platform,
            launch,
        )
    }
}
