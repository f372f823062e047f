//! The agent's settings, read from the kernel command line (which the launch measures):
//! `cocos.id=<computation id>` and `cocos.events=<transport>`, where the transport is
//! `vsock:<cid>:<port>` or `serial:<virtio-serial port name>`.

use std::fmt;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// AF_VSOCK to (cid, port); the host is CID 2.
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
    /// A virtio-serial port with this name (`-device virtserialport,name=…`).
    Serial(String),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Transport::Serial(n) => write!(f, "serial:{n}"),
        }
    }
}

/// Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Computation id ("" when absent).
    pub computation_id: String,
    /// Transport, if configured.
    pub transport: Option<Transport>,
    /// The whole command line.
    pub cmdline: String,
}

/// Parses a transport spec.
pub fn parse_transport(s: &str) -> Result<Transport, String> {
    if let Some(rest) = s.strip_prefix("vsock:") {
        let (cid, port) = rest
            .split_once(':')
            .ok_or_else(|| format!("cocos.events={s}: expected vsock:<cid>:<port>"))?;
        let cid = cid
            .parse()
            .map_err(|_| format!("cocos.events={s}: bad CID {cid:?}"))?;
        let port = port
            .parse()
            .map_err(|_| format!("cocos.events={s}: bad port {port:?}"))?;
        return Ok(Transport::Vsock { cid, port });
    }
    if let Some(name) = s.strip_prefix("serial:") {
        if name.is_empty() || name.contains('/') {
            return Err(format!("cocos.events={s}: expected serial:<port name>"));
        }
        return Ok(Transport::Serial(name.to_owned()));
    }
    Err(format!(
        "cocos.events={s}: unknown transport (vsock:<cid>:<port> or serial:<name>)"
    ))
}

impl Config {
    /// Reads the settings from a command line. An invalid transport is an error.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, String> {
        let mut id = String::new();
        let mut transport = None;
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix("cocos.id=") {
                id = v.to_owned();
            } else if let Some(v) = word.strip_prefix("cocos.events=") {
                transport = Some(parse_transport(v)?);
            }
        }
        Ok(Self {
            computation_id: id,
            transport,
            cmdline: cmdline.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cmdline() {
        let c =
            Config::from_cmdline("console=ttyS0 cocos.id=abc-1 cocos.events=serial:cocos.events\n")
                .unwrap();
        assert_eq!(c.computation_id, "abc-1");
        assert_eq!(c.transport, Some(Transport::Serial("cocos.events".into())));
        let c = Config::from_cmdline("cocos.events=vsock:2:9997").unwrap();
        assert_eq!(c.transport, Some(Transport::Vsock { cid: 2, port: 9997 }));
        assert_eq!(c.transport.unwrap().to_string(), "vsock:2:9997");
        assert_eq!(Config::from_cmdline("quiet").unwrap().transport, None);
    }

    #[test]
    fn bad_transports() {
        for t in [
            "vsock:2",
            "vsock:x:1",
            "vsock:2:99999999999",
            "serial:",
            "serial:a/b",
            "tcp:1",
        ] {
            assert!(
                Config::from_cmdline(&format!("cocos.events={t}")).is_err(),
                "{t}"
            );
        }
    }
}
