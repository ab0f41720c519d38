//! The manual pages of mfactl(1) and mfad(8) (one per subcommand too) and
//! mfactl's shell completions, from the clap definitions. Run by
//! packaging/build-deb.sh; an example, so never shipped as a binary:
//!
//!     cargo run --release --example gen_docs -p mfad -- OUTDIR
//!
//! writes OUTDIR/man/*.{1,8} and OUTDIR/completions/{mfactl.bash,_mfactl,mfactl.fish}.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_docs OUTDIR");
        std::process::exit(2);
    };
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    pages(mfad::ctl::Cli::command(), "1", &man)?;
    pages(mfad::daemon_main::command(), "8", &man)?;

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut mfad::ctl::Cli::command(), "mfactl", &completions)?;
    }
    Ok(())
}

/// A page for `cmd` in `section`, and one for each of its subcommands
/// (`mfactl-user-setup(1)`, ...), which the parent's page names.
fn pages(cmd: clap::Command, section: &str, dir: &Path) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_pages(cmd, section, dir)
}

fn write_pages(cmd: clap::Command, section: &str, dir: &Path) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, section, dir)?;
    }
    let page = clap_mangen::Man::new(cmd)
        .section(section)
        .manual("pam_mfa")
        .source(concat!("pam_mfa ", env!("CARGO_PKG_VERSION")));
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    roff.extend_from_slice(SEE_ALSO.as_bytes());
    std::fs::write(dir.join(page.get_filename()), roff)
}

/// Every page ends with the others of the product.
const SEE_ALSO: &str = r#".SH "SEE ALSO"
\fBmfactl\fR(1), \fBmfad\fR(8), \fBmfad.toml\fR(5), \fBpam_mfa\fR(8)
"#;
