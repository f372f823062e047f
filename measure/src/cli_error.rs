//! Errors as one line, for the three binaries (`cocos-measure`, `cocos-hal`,
//! `cocos-manager`): every refusal is one line on stderr with exit code 2, whatever
//! clap would print over several (its usage block and "For more information" hint),
//! and an error's chain of causes is printed with each cause once (an error whose
//! message already ends with its cause's does not get it appended again).

/// The message of a clap error on one line, without the "error: " prefix, the usage
/// block or the hint; "invalid arguments" if nothing is left.
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let msg = parts.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    if msg.is_empty() {
        "invalid arguments".to_owned()
    } else {
        msg.to_owned()
    }
}

/// Whether clap's "error" is `--help`, `--version`, or a command given without the
/// subcommand it needs (clap then prints the usage itself, exit code 2).
pub fn is_help(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// An error and its causes on one line, `outer: cause: cause`, each cause once: a
/// message that already contains its cause's text (thiserror's `{source}` in the
/// message) does not get it again.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out.replace('\n', " ")
}

/// The shells `completions` can write for.
pub use clap_complete::Shell;

/// Writes `cmd`'s shell completion script for `shell` (the three binaries'
/// `completions`); a closed pipe (`| head`) is not an error.
pub fn completions(
    cmd: &mut clap::Command,
    shell: Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_owned();
    let mut buf = Vec::new();
    clap_complete::generate(shell, cmd, name, &mut buf);
    quiet_pipe(out.write_all(&buf))
}

/// Writes `cmd`'s man page (roff, section 1); a closed pipe is not an error.
pub fn man_page(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    quiet_pipe(out.write_all(&buf))
}

fn quiet_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Writes `NAME.1` and one `NAME-SUBCOMMAND.1` per subcommand into `dir`; returns the
/// files written.
pub fn man_pages(
    cmd: &clap::Command,
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![(cmd.get_name().to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        pages.push((name, sub.clone()));
    }
    let mut written = Vec::new();
    for (name, c) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut f = std::fs::File::create(&path)?;
        clap_mangen::Man::new(c).title(name).render(&mut f)?;
        written.push(path);
    }
    Ok(written)
}

/// The `completions` and `man` subcommands, one definition for cocos-measure and
/// cocos-hal (flattened into their subcommand enums; cocos-manager, which has no
/// subcommands, takes `--completions` / `--man`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DocsCmd {
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout
    Completions {
        /// The shell
        shell: Shell,
    },
    /// The man page on stdout (roff), or every page (one per subcommand) into --dir
    Man {
        /// Write NAME.1 and NAME-SUBCOMMAND.1 here
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// Writing completions or man pages failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {what}: {source}")]
pub struct DocsError {
    what: String,
    source: std::io::Error,
}

impl DocsCmd {
    /// Writes what was asked for `cmd` (the whole command line interface).
    pub fn run(&self, mut cmd: clap::Command) -> Result<(), DocsError> {
        let failed = |what: String| move |source| DocsError { what, source };
        match self {
            DocsCmd::Completions { shell } => completions(&mut cmd, *shell, &mut std::io::stdout())
                .map_err(failed("the completions".into())),
            DocsCmd::Man { dir: Some(d) } => man_pages(&cmd, d)
                .map(drop)
                .map_err(failed(format!("man pages into {}", d.display()))),
            DocsCmd::Man { dir: None } => {
                man_page(&cmd, &mut std::io::stdout()).map_err(failed("the man page".into()))
            }
        }
    }
}

/// Prints `BIN: error: MESSAGE` ([`chain`]) on stderr: the one error line every binary
/// of the project writes.
pub fn report(bin: &str, e: &(dyn std::error::Error + 'static)) {
    eprintln!("{bin}: error: {}", chain(e));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long, value_parser = clap::value_parser!(u8))]
        n: u8,
        #[arg(long)]
        name: String,
    }

    #[test]
    fn errors_become_one_line() {
        for argv in [
            vec!["x", "--n", "300", "--name", "a"],
            vec!["x", "--bogus"],
            vec!["x"],
        ] {
            let e = Args::try_parse_from(&argv).unwrap_err();
            let m = one_line(&e);
            assert!(
                !m.contains('\n') && !m.starts_with("error:"),
                "{argv:?}: {m}"
            );
            assert!(!m.contains("For more information"), "{m}");
            assert!(!is_help(&e));
        }
        let m = one_line(&Args::try_parse_from(["x"]).unwrap_err());
        assert!(m.contains("--n") && m.contains("--name"), "{m}");
        assert!(is_help(&Args::try_parse_from(["x", "--help"]).unwrap_err()));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read spec x: {0}")]
    struct Doubled(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("building failed")]
    struct Outer(#[source] Doubled);

    /// Each cause once: the io error is already in Doubled's message.
    #[test]
    fn causes_are_not_repeated() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let m = chain(&Outer(Doubled(io())));
        assert_eq!(m, format!("building failed: cannot read spec x: {}", io()));
        assert_eq!(m.matches(&io().to_string()).count(), 1, "{m}");
        let e = anyhow::Error::new(io()).context("cannot read /x");
        assert_eq!(chain(e.as_ref()), format!("cannot read /x: {}", io()));
    }
}
