//! mfactl: the command-line client of mfad; all logic is in `mfad::ctl`.

fn main() -> std::process::ExitCode {
    mfad::ctl::main()
}
