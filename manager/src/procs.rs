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
}
