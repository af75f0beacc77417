// Link options of `tinydc` for a smaller idle daemon (issue #12: idle memory).
//
// Packed relative relocations (DT_RELR). The executable is position-independent (ASLR), so the
// loader patches every pointer in its read-only data at start: ~47,000 R_*_RELATIVE entries of 24
// bytes, 1.1 MB of `.rela.dyn` that each of the three daemons (and every `tinydc` command) reads
// in full at start and keeps mapped. DT_RELR encodes the same relocations in a bitmap of a few
// KiB. `-z relro -z now` and PIE stay as they are. GNU ld ≥ 2.38 and lld emit it; the linker then
// makes the executable require glibc's GLIBC_ABI_DT_RELR (glibc ≥ 2.36: Debian 12), so an older
// glibc refuses to start it with a clear message instead of misreading it. A linker that does not
// know the option for the target warns and ignores it.
//
// The daemons' start-up code together (`symbol-order.txt`, written by scripts/symbol-order). An
// idle daemon's resident code is the 64 KiB windows the kernel maps around each code page it
// faults in; lld's --symbol-ordering-file puts the functions the daemons run at start and while
// idle at the start of .text, one stretch instead of pages all over it. Only where rustc links
// with lld by default (x86_64 Linux since Rust 1.90) and no other linker is configured: GNU ld
// does not know the option. Names in the file that this build does not define (another
// Cargo.lock or toolchain) are skipped without a warning; the file then orders less.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let glibc_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let arch = var("CARGO_CFG_TARGET_ARCH");
    if glibc_linux && matches!(arch.as_str(), "x86_64" | "aarch64") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if glibc_linux && arch == "x86_64" && default_linker() && var("PROFILE") == "release" {
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
        if order.is_file() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Whether rustc links with its default linker (rust-lld on x86_64-unknown-linux-gnu): no
/// `linker` set for the target (cargo passes it as RUSTC_LINKER) and no linker flags in RUSTFLAGS.
fn default_linker() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    std::env::var_os("RUSTC_LINKER").is_none()
        && !["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|option| flags.contains(option))
}
