use std::path::Path;

use anyhow::Context as _;

/// Builds the XDP programs of `gateway-ebpf` for the BPF target with the nightly toolchain and
/// bpf-linker (both installed by `cargo xtask setup`), so the object can be embedded in the binary.
fn main() -> anyhow::Result<()> {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("locating the eBPF crate at {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "gateway-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
