// A run allocates and frees a few small strings and maps for every event and customer it reads;
// mimalloc does that faster than the system allocator (measured: an incremental run's median
// 0.48 s → 0.43 s).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nudge::cli::main()
}
