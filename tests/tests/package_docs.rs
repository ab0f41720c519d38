//! What the package ships besides programs: every man page renders without
//! a warning, the bash completion loads and completes, lintian finds no
//! error (and each warning kept is listed in build-deb.sh), and the man page
//! sources name every key of mfad.toml and every option of the module, so a
//! new one cannot go undocumented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod package_common;

use std::collections::BTreeSet;
use std::process::Command;

use e2e::*;
use package_common::*;

#[test]
fn every_man_page_renders_without_warnings() {
    let dir = unpacked();
    let mut pages = Vec::new();
    for section in ["man1", "man5", "man8"] {
        let sub = dir.path().join("usr/share/man").join(section);
        for entry in std::fs::read_dir(&sub).unwrap_or_else(|e| panic!("{}: {e}", sub.display())) {
            pages.push(entry.unwrap().path());
        }
    }
    let names: BTreeSet<String> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for wanted in ["mfactl.1.gz", "mfad.8.gz", "pam_mfa.8.gz", "mfad.toml.5.gz", "mfactl-user-setup.1.gz"] {
        assert!(names.contains(wanted), "{wanted} is not in the package: {names:?}");
    }
    for page in &pages {
        let out = run(Command::new("man").args(["--warnings", "-l"]).arg(page).env("MANWIDTH", "80"));
        assert!(out.status.success(), "man -l {}: {}", page.display(), stderr(&out));
        assert!(stderr(&out).trim().is_empty(), "man --warnings -l {}:\n{}", page.display(), stderr(&out));
        assert!(stdout(&out).lines().count() > 10, "{} renders almost empty", page.display());
    }
    // The hand-written pages carry their content (scdoc ran, not an empty file).
    let out = run(Command::new("man").arg("-l").arg(dir.path().join("usr/share/man/man5/mfad.toml.5.gz")));
    assert!(stdout(&out).contains("key_file"), "{}", stdout(&out));
    let out = run(Command::new("man").arg("-l").arg(dir.path().join("usr/share/man/man8/pam_mfa.8.gz")));
    assert!(stdout(&out).contains("PAM_AUTHINFO_UNAVAIL"), "{}", stdout(&out));
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let dir = unpacked();
    let file = dir.path().join("usr/share/bash-completion/completions/mfactl");
    let script = format!(
        "source '{}' && complete -p mfactl && COMP_WORDS=(mfactl us) COMP_CWORD=1 COMP_LINE='mfactl us' \
         COMP_POINT=9 && func=$(complete -p mfactl | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') && \"$func\" mfactl us mfactl \
         && printf 'reply: %s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = run(Command::new("bash").arg("--norc").arg("-c").arg(&script));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(said.lines().next().unwrap_or_default().starts_with("complete "), "complete -p mfactl: {said}");
    assert!(said.lines().any(|l| l.trim() == "reply: user"), "`mfactl us<TAB>` did not offer `user`: {said}");
    for (path, first) in [
        ("usr/share/zsh/vendor-completions/_mfactl", "#compdef mfactl"),
        ("usr/share/fish/vendor_completions.d/mfactl.fish", ""),
    ] {
        let text = std::fs::read_to_string(dir.path().join(path)).unwrap();
        assert!(text.starts_with(first) && text.contains("mfactl"), "{path}");
    }
}

#[test]
fn lintian_reports_no_errors_and_every_warning_is_explained() {
    let deb = deb();
    let out = run(Command::new("lintian").args(["--tag-display-limit", "0"]).arg(deb));
    let said = stdout(&out);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    let kept = std::fs::read_to_string(root().join("packaging/build-deb.sh")).unwrap();
    for warning in said.lines().filter(|l| l.starts_with("W: ")) {
        // "W: libpam-mfa: TAG [DETAIL]"
        let tag = warning.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            kept.contains(&format!("#   - {tag}:")),
            "lintian warning {tag} is not listed with its reason in packaging/build-deb.sh: {warning}"
        );
    }
}

#[test]
fn man_page_sources_document_every_config_key_and_module_option() {
    let root = root();
    // The config types: config.rs and the modules of its sections.
    let mut config_src = std::fs::read_to_string(root.join("shared/src/config.rs")).unwrap();
    for entry in std::fs::read_dir(root.join("shared/src/config")).unwrap() {
        config_src.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let config_page = std::fs::read_to_string(root.join("packaging/man/mfad.toml.5.scd")).unwrap();
    let keys = config_keys(&config_src);
    assert!(
        keys.len() > 30 && keys.contains("key_file") && keys.contains("policy") && keys.contains("textfile"),
        "parsed {keys:?}"
    );
    // A key is documented as `*key*`, a table as `[key]` or `[[key]]`.
    let documented = |k: &String| {
        ["*", "[", "[[", "."].iter().any(|open| {
            let close = match *open {
                "*" => "*",
                "[[" | "." => "]]",
                _ => "]",
            };
            config_page.contains(&format!("{open}{k}{close}"))
        })
    };
    let missing: Vec<_> = keys.iter().filter(|k| !documented(k)).collect();
    assert!(missing.is_empty(), "keys of shared/src/config.rs missing from packaging/man/mfad.toml.5.scd: {missing:?}");

    let options_src = std::fs::read_to_string(root.join("pam_mfa/src/options.rs")).unwrap();
    let module_page = std::fs::read_to_string(root.join("packaging/man/pam_mfa.8.scd")).unwrap();
    let options = module_options(&options_src);
    assert!(options.contains("socket=") && options.contains("debug"), "parsed {options:?}");
    let missing: Vec<_> = options.iter().filter(|o| !module_page.contains(&format!("\n*{o}"))).collect();
    assert!(
        missing.is_empty(),
        "options of pam_mfa/src/options.rs missing from packaging/man/pam_mfa.8.scd: {missing:?}"
    );
}

/// The keys of every `Deserialize` struct in config.rs: its `pub` fields,
/// under their `#[serde(rename = "...")]` name when they have one.
fn config_keys(src: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_struct = false;
    let mut deserialize = false;
    let mut rename: Option<String> = None;
    for line in src.lines().map(str::trim) {
        if line.starts_with("#[derive(") {
            deserialize = line.contains("Deserialize");
        } else if line.starts_with("pub struct ") {
            in_struct = deserialize && line.ends_with('{');
        } else if line == "}" {
            in_struct = false;
        } else if in_struct && let Some(value) = line.strip_prefix("#[serde(rename = \"") {
            rename = value.split('"').next().map(str::to_string);
        } else if in_struct && let Some(field) = line.strip_prefix("pub ") {
            let name = field.split(':').next().unwrap_or_default().trim().to_string();
            keys.insert(rename.take().unwrap_or(name));
        }
    }
    keys
}

/// The module's options as its parser matches them: `Some(("name", ...))`
/// gives `name=`, `arg == "name"` a flag.
fn module_options(src: &str) -> BTreeSet<String> {
    let parser = src.split("pub fn parse").nth(1).unwrap_or_default();
    let parser = parser.split("\nfn ").next().unwrap_or_default();
    let mut options = BTreeSet::new();
    for piece in parser.split("Some((\"").skip(1) {
        options.insert(format!("{}=", piece.split('"').next().unwrap_or_default()));
    }
    for piece in parser.split("arg == \"").skip(1) {
        options.insert(piece.split('"').next().unwrap_or_default().to_string());
    }
    options
}
