fn main() -> std::process::ExitCode {
    nudge::cli::main()
}
