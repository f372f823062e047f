//! Clap's errors as one line, for the three binaries (`cocos-measure`, `cocos-hal`,
//! `cocos-manager`): every refusal is one line on stderr with exit code 2, whatever
//! clap would print over several (its usage block and "For more information" hint).

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

/// Whether clap's "error" is `--help` or `--version`, which clap prints itself.
pub fn is_help(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    )
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
}
