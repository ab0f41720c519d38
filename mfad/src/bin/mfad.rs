fn main() -> std::process::ExitCode {
    mfad::daemon_main::main()
}
