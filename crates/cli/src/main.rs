//! `tpod`: the publisher CLI. Everything happens in the `tpod` library; this only runs it.

fn main() -> std::process::ExitCode {
    tpod::main()
}
