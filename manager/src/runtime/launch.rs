//! A launch: verify the release files from one open descriptor each, reserve a CID
//! and port, build QEMU's argv, spawn it with the verified descriptors, record it.

use super::*;

impl Manager {
    pub(super) async fn launch(
        self: &Arc<Self>,
        id: &str,
        vcpus: u32,
        ttl: Option<Duration>,
        cid: Option<u32>,
        port: Option<u16>,
        t0: Instant,
    ) -> Result<RunResult, ApiError> {
        let cmdline = self.cmdline_for(id)?;
        // Verify from open descriptors and compute the measurement off the runtime.
        let (files, expected) = {
            let m = self.clone();
            let cmdline = cmdline.clone();
            tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
                let refuse = |e: release::ReleaseError| ApiError::Refused(e.to_string());
                let k = release::open_verified(&m.release.kernel.path, &m.release.kernel.sha256)
                    .map_err(refuse)?;
                let i = release::open_verified(&m.release.initrd.path, &m.release.initrd.sha256)
                    .map_err(refuse)?;
                let f = release::open_verified(&m.cfg.ovmf, &m.firmware_sha256).map_err(refuse)?;
                let e = m
                    .expected
                    .compute(&cmdline, vcpus)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                Ok(([k, i, f], e))
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
        };
        let dir = self.vms_dir.join(id);
        let internal = |what: &str, e: std::io::Error| {
            ApiError::Internal(format!("{what} {}: {e}", dir.display()))
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| internal("cannot clear stale", e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| internal("cannot create", e))?;
        let private = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(dir.join(name))
        };
        private("console.log").map_err(|e| internal("console.log in", e))?;
        let qemu_log = private("qemu.log").map_err(|e| internal("qemu.log in", e))?;
        let name = format!("cocos-{id}");
        let [k, i, f] = files;
        let spec = VmSpec {
            name: name.clone(),
            accel: match self.cfg.accel {
                AccelKind::Kvm => Accel::Kvm,
                AccelKind::Tcg => Accel::Tcg,
                AccelKind::Auto if Path::new("/dev/kvm").exists() => Accel::Kvm,
                AccelKind::Auto => Accel::Tcg,
            },
            cpus: vcpus,
            cpu_model: self.cpu_model(),
            memory_mib: self.cfg.memory_mib().map_err(ApiError::Internal)?,
            firmware: PathBuf::from("/dev/fd/5"),
            kernel: PathBuf::from("/dev/fd/3"),
            initrd: Some(PathBuf::from("/dev/fd/4")),
            cmdline: cmdline.clone(),
            tee: self.tee(),
            transport: match cid {
                Some(cid) => AgentTransport::Vsock { cid },
                None => AgentTransport::Serial {
                    socket: dir.join("agent.sock"),
                    name: SERIAL_PORT.into(),
                },
            },
            forward: port.zip(self.cfg.agent_guest_port),
            console_log: dir.join("console.log"),
            qmp_socket: dir.join("qmp.sock"),
        };
        if !self.cfg.skip_host_check {
            let caps = qemu::detect_host(Path::new("/sys"), Path::new("/dev"));
            if let Some(why) = caps.refuse(&spec.tee, spec.accel) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::Refused(why));
            }
        }
        let mut cmd = tokio::process::Command::new(&self.cfg.qemu_bin);
        cmd.args(qemu::argv(&spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(qemu_log)
            // Its own process group: a signal to the manager's group leaves VMs running.
            .process_group(0)
            .kill_on_drop(false);
        cmd.fd_mappings(vec![
            FdMapping {
                parent_fd: k.file.into(),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: i.file.into(),
                child_fd: 4,
            },
            FdMapping {
                parent_fd: f.file.into(),
                child_fd: 5,
            },
        ])
        .map_err(|e| ApiError::Internal(format!("fd mapping: {e}")))?;
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::Internal(format!(
                    "cannot start {}: {e}",
                    self.cfg.qemu_bin.display()
                )));
            }
        };
        drop(cmd); // closes our copies of the verified descriptors
        let Some(pid) = child.id() else {
            // Only a child already reaped has no pid; nothing was recorded yet.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ApiError::Internal(format!(
                "{} exited before its pid could be read",
                self.cfg.qemu_bin.display()
            )));
        };
        let launch_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let start_time = procs::start_time(Path::new("/proc"), pid).unwrap_or(0);
        let created_ms = now_ms();
        let record = VmRecord {
            id: id.into(),
            name,
            pid,
            start_time,
            dir,
            vcpus,
            memory_mib: spec.memory_mib,
            cmdline: cmdline.clone(),
            tee: self.cfg.tee,
            cid,
            forwarded_port: port,
            created_ms,
            deadline_ms: ttl.map(|t| created_ms.saturating_add(t.as_millis() as u64)),
            expected: expected.clone(),
            launch_ms,
        };
        let rec_json =
            serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Err(e) = self.store.put_vm(id, &rec_json) {
            tracing::error!("{e}; the VM runs but will not be re-adopted after a restart");
        }
        self.emit(
            id,
            "vm-provision",
            "ok",
            json!({"pid": pid, "cmdline": cmdline, "vcpus": vcpus, "expected_measurement": expected,
                   "release": {"name": self.release.name, "version": self.release.version},
                   "launch_ms": launch_ms}),
        )
        .await;
        self.spawn_supervisor(record, Some(child));
        Ok(RunResult {
            computation_id: id.into(),
            expected_measurement: expected,
            pid,
            cmdline,
            vcpus,
            launch_ms,
            forwarded_port: port,
        })
    }

    /// QEMU's -cpu: an SNP guest runs the vCPU type its measurement assumes.
    pub(super) fn cpu_model(&self) -> String {
        if self.cfg.tee == TeeKind::Snp {
            self.cfg.snp_vcpu_type.clone()
        } else {
            self.cfg.cpu.clone()
        }
    }

    pub(super) fn tee(&self) -> Tee {
        match self.cfg.tee {
            TeeKind::None => Tee::None,
            TeeKind::Snp => Tee::SevSnp {
                cbitpos: self.cfg.cbitpos,
                reduced_phys_bits: self.cfg.reduced_phys_bits,
                host_data: self.cfg.host_data.clone(),
            },
            TeeKind::Tdx => Tee::Tdx {
                quote_socket: self.cfg.tdx_quote_socket.clone(),
            },
        }
    }
}
