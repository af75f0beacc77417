//! A 1 GiB upload and download through davd with the process's memory staying flat: bodies
//! are streamed to and from disk, never held in memory.

mod common;

use common::*;

const GIB: u64 = 1 << 30;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_up_and_down_with_flat_memory() {
    let dav = Dav::start(None).await;
    // Warm up the server (TLS, database pool, auth) so the baseline includes them.
    assert_eq!(
        dav.curl(ALICE, &["-X", "PUT", "--data-binary", "warm", &dav.url("/warm.txt")])
            .await
            .status,
        201
    );
    assert_eq!(dav.curl(ALICE, &[&dav.url("/warm.txt")]).await.status, 200);

    // A sparse 1 GiB source with marks at the start, the middle and the end.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(GIB).unwrap();
        for at in [0, GIB / 2, GIB - 16] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(b"tinydc-mark-0123").unwrap();
        }
    }
    let baseline = status_kib("VmRSS:");

    let src_s = src.to_string_lossy().into_owned();
    let r = dav.curl(ALICE, &["-T", &src_s, &dav.url("/big.bin")]).await;
    assert_eq!(r.status, 201, "{}", r.headers);
    let stored = dav.files_dir(ALICE).join("big.bin");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), GIB);
    assert_eq!(file_bytes(&dav, ALICE).await, GIB + 4);

    // Download and compare byte for byte as it streams.
    let script = format!(
        "curl -k -s -S -u '{ALICE}:{PW}' '{}' | cmp - '{}'",
        dav.url("/big.bin"),
        src.display()
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "download differs: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let peak = status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    println!(
        "RSS baseline {} MiB, peak {} MiB, growth {growth_mib} MiB for 1 GiB up and down",
        baseline / 1024,
        peak / 1024
    );
    assert!(growth_mib < 200, "memory grew by {growth_mib} MiB moving 1 GiB");
}
