//! Process identity and signals for QEMU children, including ones adopted after a
//! manager restart (not our children, so not waitable). A process is identified by
//! pid plus its start time (field 22 of /proc/PID/stat, clock ticks since boot), so a
//! recycled pid is never mistaken for the VM; signals are sent only after that check.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The start time of `pid` (clock ticks since boot), if it is alive.
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_start_time(&stat)
}

/// Parses field 22 of a /proc/PID/stat line (the command may contain spaces and ')').
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After ")" come fields 3.. ; start time is field 22, i.e. the 20th here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first().is_some_and(|s| *s == "Z") {
        return None; // a zombie is gone for our purposes
    }
    f.get(19)?.parse().ok()
}

/// True if `pid` is alive and started at `start`.
pub fn is_same(pid: u32, start: u64) -> bool {
    start_time(Path::new("/proc"), pid) == Some(start)
}

/// Sends `sig` to `pid` if it is still the process that started at `start`.
pub fn signal_if_same(pid: u32, start: u64, sig: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    is_same(pid, start) && kill(Pid::from_raw(raw), sig).is_ok()
}

/// A live process found by what its arguments name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// Its arguments.
    pub argv: Vec<String>,
}

/// The VM id a QEMU of ours carries: the directory component right after `vms_dir/`
/// in any of its arguments (its QMP, agent and console paths live there).
pub fn vm_id_in(argv: &[String], vms_dir: &Path) -> Option<String> {
    let prefix = format!("{}/", vms_dir.display());
    argv.iter().find_map(|a| {
        let at = a.find(&prefix)?;
        let rest = a.get(at + prefix.len()..)?;
        let id = rest.split('/').next()?;
        (!id.is_empty()).then(|| id.to_owned())
    })
}

/// Every live process under `proc_root` one of whose arguments names a path under
/// `vms_dir` (the manager's QEMUs, whatever their record says), except this process.
pub fn under_dir(proc_root: &Path, vms_dir: &Path) -> Vec<(String, Found)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let (Some(id), Some(start_time)) = (vm_id_in(&argv, vms_dir), start_time(proc_root, pid))
        else {
            continue;
        };
        out.push((
            id,
            Found {
                pid,
                start_time,
                argv,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 100 5 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(
            parse_start_time("1 (z) Z 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"),
            None
        );
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1"), None);
    }

    #[test]
    fn identifies_this_process() {
        let me = std::process::id();
        let st = start_time(Path::new("/proc"), me).unwrap();
        assert!(is_same(me, st));
        assert!(!is_same(me, st + 1));
        assert!(
            !signal_if_same(me, st + 1, Signal::SIGTERM),
            "wrong start time: no signal"
        );
    }

    #[test]
    fn finds_the_vm_id_in_qemu_arguments() {
        let vms = Path::new("/var/lib/cocos/vms");
        let argv: Vec<String> = [
            "qemu",
            "-name",
            "cocos-a1",
            "-qmp",
            "unix:/var/lib/cocos/vms/a1/qmp.sock,server=on",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(vm_id_in(&argv, vms).as_deref(), Some("a1"));
        assert_eq!(vm_id_in(&argv, Path::new("/var/lib/other/vms")), None);
        assert_eq!(vm_id_in(&["/var/lib/cocos/vms/".to_owned()], vms), None);
    }
}
