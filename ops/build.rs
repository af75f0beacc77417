// Link `tinydc` with packed relative relocations (DT_RELR, issue #12: idle memory).
//
// The executable is position-independent (ASLR), so the loader patches every pointer in its
// read-only data at start: ~47,000 R_*_RELATIVE entries of 24 bytes, 1.1 MB of `.rela.dyn` that
// each of the three daemons (and every `tinydc` command) reads in full at start and keeps
// mapped. DT_RELR encodes the same relocations in a bitmap of a few KiB. `-z relro -z now` and
// PIE stay as they are. GNU ld ≥ 2.38 and lld emit it; the linker then makes the executable
// require glibc's GLIBC_ABI_DT_RELR (glibc ≥ 2.36: Debian 12), so an older glibc refuses to
// start it with a clear message instead of misreading it. A linker that does not know the
// option for the target warns and ignores it.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let glibc_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if glibc_linux && matches!(var("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
