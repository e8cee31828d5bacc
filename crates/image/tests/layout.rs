//! Building, reading and unpacking image layouts, including hostile ones.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tpod_image::{ContainerConfig, ImageError, read_layout, unpack, write_layout};

const BUSYBOX: &str = "/bin/busybox";

fn hello_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

fn build_hello(out: &Path) -> tpod_image::Digest {
    tpod_image::hello::build(out, Path::new(BUSYBOX), &hello_dir().join("www/index.html")).unwrap()
}

enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A tar with names written raw into the header, so `..` and absolute paths get through.
fn raw_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, data, kind, link): (&str, &[u8], _, &str) = match entry {
            Entry::Dir(name) => (name, b"", tar::EntryType::Directory, ""),
            Entry::File(name, data) => (name, data, tar::EntryType::Regular, ""),
            Entry::Symlink(name, target) => (name, b"", tar::EntryType::Symlink, target),
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Writes `layers` as an image in `tmp/image`, reads it and unpacks it into `tmp/rootfs`.
fn unpack_layers(tmp: &Path, layers: &[Vec<u8>]) -> Result<PathBuf, ImageError> {
    let image_dir = tmp.join("image");
    write_layout(&image_dir, layers, &ContainerConfig::default()).unwrap();
    let image = read_layout(&image_dir).unwrap();
    let rootfs = tmp.join("rootfs");
    unpack(&image, &rootfs).map(|_| rootfs)
}

#[test]
fn hello_image_unpacks_to_busybox_and_page() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = build_hello(&tmp.path().join("image"));
    let image = read_layout(&tmp.path().join("image")).unwrap();
    assert_eq!(image.manifest_digest, digest);
    let config = image.config.config().as_ref().unwrap();
    assert_eq!(config.entrypoint().as_deref(), Some(&["/bin/busybox".to_owned(), "httpd".to_owned()][..]));
    assert_eq!(config.exposed_ports().as_deref(), Some(&["8080/tcp".to_owned()][..]));

    let rootfs = tmp.path().join("rootfs");
    let report = unpack(&image, &rootfs).unwrap();
    assert!(report.skipped_devices.is_empty());
    let busybox = rootfs.join("bin/busybox");
    assert_eq!(fs::metadata(&busybox).unwrap().permissions().mode() & 0o777, 0o755);
    assert!(fs::read(&busybox).unwrap() == fs::read(BUSYBOX).unwrap(), "busybox differs");
    assert_eq!(fs::read(rootfs.join("www/index.html")).unwrap(), fs::read(hello_dir().join("www/index.html")).unwrap());
}

#[test]
fn building_twice_gives_the_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let first = build_hello(&tmp.path().join("a"));
    let second = build_hello(&tmp.path().join("b"));
    assert_eq!(first, second);
    assert_eq!(fs::read(tmp.path().join("a/index.json")).unwrap(), fs::read(tmp.path().join("b/index.json")).unwrap());
}

#[test]
fn hello_manifest_parses() {
    let manifest = tpod_manifest::load(&hello_dir().join("tpod.yaml")).unwrap();
    assert_eq!(manifest.name, "hello");
    let web = &manifest.containers[0];
    assert_eq!(web.image.reference, "./image");
    assert_eq!(web.command.as_deref(), Some(&["/bin/busybox".to_owned(), "httpd".to_owned()][..]));
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 1;
    fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_layer_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = tmp.path().join("image");
    build_hello(&image_dir);
    let image = read_layout(&image_dir).unwrap();
    let layer = &image.layers[0].blob.digest;
    flip_byte(&image.layers[0].blob.path, 100);
    let rootfs = tmp.path().join("rootfs");
    let err = unpack(&image, &rootfs).unwrap_err();
    assert!(matches!(&err, ImageError::DigestMismatch { digest, .. } if digest == layer), "{err}");
    assert!(err.to_string().contains(layer.as_str()), "{err}");
    assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 0);
}

#[test]
fn tampered_config_is_refused_by_read_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = tmp.path().join("image");
    build_hello(&image_dir);
    let image = read_layout(&image_dir).unwrap();
    let config = image.config_blob.digest.clone();
    flip_byte(&image.config_blob.path, 10);
    let err = read_layout(&image_dir).unwrap_err();
    assert!(matches!(&err, ImageError::DigestMismatch { digest, .. } if *digest == config), "{err}");
}

#[test]
fn bad_digests_and_oversized_documents_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = tmp.path().join("image");
    build_hello(&image_dir);
    let index = fs::read_to_string(image_dir.join("index.json")).unwrap();
    let digest = read_layout(&image_dir).unwrap().manifest_digest;
    fs::write(image_dir.join("index.json"), index.replace(digest.as_str(), &format!("sha512:{}", "a".repeat(128))))
        .unwrap();
    assert!(matches!(read_layout(&image_dir), Err(ImageError::InvalidDigest(_))));
    fs::write(image_dir.join("index.json"), index.replace(digest.hex(), &digest.hex().to_uppercase())).unwrap();
    assert!(read_layout(&image_dir).is_err());
    fs::write(image_dir.join("index.json"), vec![b' '; (tpod_image::MAX_JSON_BYTES + 1) as usize]).unwrap();
    assert!(matches!(read_layout(&image_dir), Err(ImageError::TooLarge { .. })));
}

#[test]
fn parent_paths_are_refused() {
    for name in ["../escape", "a/../../escape", "/../escape"] {
        let tmp = tempfile::tempdir().unwrap();
        let err = unpack_layers(tmp.path(), &[raw_tar(&[Entry::File(name, b"x")])]).unwrap_err();
        assert!(matches!(&err, ImageError::UnsafeEntry { path, .. } if path == name), "{name}: {err}");
        assert!(!tmp.path().join("escape").exists());
    }
}

#[test]
fn a_leading_slash_or_dot_slash_names_a_path_inside_the_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    // As umoci writes them: absolute names, the root itself included.
    let layer = raw_tar(&[
        Entry::Dir("/"),
        Entry::Dir("/abs-tpod-image-test/"),
        Entry::File("/abs-tpod-image-test/f", b"abs"),
        Entry::File("./dot", b"dot"),
        Entry::Symlink("/abs-tpod-image-test/link", "/abs-tpod-image-test/f"),
    ]);
    let rootfs = unpack_layers(tmp.path(), &[layer]).unwrap();
    assert_eq!(fs::read(rootfs.join("abs-tpod-image-test/f")).unwrap(), b"abs");
    assert_eq!(fs::read(rootfs.join("dot")).unwrap(), b"dot");
    // The symlink is kept as written: inside the container it resolves against the pod's root.
    assert_eq!(fs::read_link(rootfs.join("abs-tpod-image-test/link")).unwrap(), Path::new("/abs-tpod-image-test/f"));
    assert!(!Path::new("/abs-tpod-image-test").exists());
}

/// `check_layers` (what the publisher runs before paying) and `unpack` (what the provider runs)
/// agree on every case: both accept, or both refuse the same entry.
#[test]
fn check_layers_agrees_with_unpack() {
    let outside = "/tmp";
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("absolute", vec![raw_tar(&[Entry::File("/etc/x", b"x")])]),
        ("dotdot", vec![raw_tar(&[Entry::File("a/../../escape", b"x")])]),
        ("through a symlink", vec![raw_tar(&[Entry::Symlink("evil", "/"), Entry::File("evil/etc/x", b"x")])]),
        (
            "through a lower layer's symlink",
            vec![raw_tar(&[Entry::Symlink("evil", outside)]), raw_tar(&[Entry::File("evil/x", b"x")])],
        ),
        ("through a file", vec![raw_tar(&[Entry::File("f", b"x"), Entry::File("f/x", b"x")])]),
        ("whiteout of parent", vec![raw_tar(&[Entry::File("a/.wh..", b"")])]),
        (
            "whiteout then write",
            vec![
                raw_tar(&[Entry::Symlink("d", outside)]),
                raw_tar(&[Entry::File(".wh.d", b""), Entry::File("d/x", b"x")]),
            ],
        ),
        (
            "opaque",
            vec![
                raw_tar(&[Entry::Symlink("d/l", outside)]),
                raw_tar(&[Entry::File("d/.wh..wh..opq", b""), Entry::File("d/l/x", b"x")]),
            ],
        ),
        (
            "replaced symlink",
            vec![raw_tar(&[Entry::Symlink("d", outside), Entry::Dir("d/"), Entry::File("d/x", b"x")])],
        ),
    ];
    for (what, layers) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let image_dir = tmp.path().join("image");
        write_layout(&image_dir, &layers, &ContainerConfig::default()).unwrap();
        let image = read_layout(&image_dir).unwrap();
        let checked = tpod_image::check_layers(&image).map(|_| ()).map_err(|e| e.to_string());
        let unpacked = unpack(&image, &tmp.path().join("rootfs")).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(checked, unpacked, "{what}");
        let refused =
            ["dotdot", "through a symlink", "through a lower layer's symlink", "through a file", "whiteout of parent"];
        assert_eq!(checked.is_err(), refused.contains(&what), "{what}: {checked:?}");
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_layers(tmp.path(), &[raw_tar(&[Entry::Symlink("evil", "/"), Entry::File("evil/etc/x", b"x")])])
        .unwrap_err();
    assert!(matches!(&err, ImageError::UnsafeEntry { path, .. } if path == "evil/etc/x"), "{err}");
    assert!(!Path::new("/etc/x").exists());

    // The same through a link to a directory outside, and through a link made by a lower layer.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let link = raw_tar(&[Entry::Symlink("evil", outside.to_str().unwrap())]);
    let err = unpack_layers(tmp.path(), &[link, raw_tar(&[Entry::File("evil/x", b"x")])]).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"untouched").unwrap();
    let link = raw_tar(&[Entry::Symlink("f", outside.to_str().unwrap())]);
    let rootfs = unpack_layers(tmp.path(), &[link, raw_tar(&[Entry::File("f", b"new")])]).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"untouched");
    assert!(!fs::symlink_metadata(rootfs.join("f")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(rootfs.join("f")).unwrap(), b"new");
}

#[test]
fn whiteouts_remove_lower_layer_content() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = raw_tar(&[
        Entry::Dir("a/"),
        Entry::File("a/keep", b"k"),
        Entry::File("a/gone", b"g"),
        Entry::Dir("b/"),
        Entry::File("b/old", b"o"),
    ]);
    let upper =
        raw_tar(&[Entry::File("a/.wh.gone", b""), Entry::File("b/new", b"n"), Entry::File("b/.wh..wh..opq", b"")]);
    let rootfs = unpack_layers(tmp.path(), &[lower, upper]).unwrap();
    assert!(rootfs.join("a/keep").exists());
    assert!(!rootfs.join("a/gone").exists());
    assert!(!rootfs.join("a/.wh.gone").exists());
    assert!(!rootfs.join("b/old").exists());
    assert_eq!(fs::read(rootfs.join("b/new")).unwrap(), b"n");
}

#[test]
fn whiteout_of_parent_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("precious"), b"p").unwrap();
    let err = unpack_layers(tmp.path(), &[raw_tar(&[Entry::File("a/.wh..", b"")])]).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert!(tmp.path().join("precious").exists());
}

/// Whether this process may chown files (tests of owners need root).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

/// A tar entry with an owner and a mode.
fn owned(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, ids: (u64, u64), mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_uid(ids.0);
    header.set_gid(ids.1);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_size(if kind == tar::EntryType::Regular { 2 } else { 0 });
    if kind == tar::EntryType::Symlink {
        header.set_link_name("file").unwrap();
    }
    let data: &[u8] = if kind == tar::EntryType::Regular { b"x\n" } else { b"" };
    builder.append_data(&mut header, name, data).unwrap();
}

#[test]
fn shifted_unpack_keeps_owners_moved_into_the_range() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("skipped: changing owners needs root");
        return;
    }
    let mut builder = tar::Builder::new(Vec::new());
    owned(&mut builder, "home/app/", tar::EntryType::Directory, (1000, 1001), 0o750);
    owned(&mut builder, "home/app/file", tar::EntryType::Regular, (1000, 1001), 0o640);
    owned(&mut builder, "home/app/link", tar::EntryType::Symlink, (1000, 1001), 0o777);
    owned(&mut builder, "bin/su", tar::EntryType::Regular, (0, 0), 0o4755);
    owned(&mut builder, "far", tar::EntryType::Regular, (70000, 3_000_000), 0o644);
    let tmp = tempfile::tempdir().unwrap();
    let image_dir = tmp.path().join("image");
    write_layout(&image_dir, &[builder.into_inner().unwrap()], &ContainerConfig::default()).unwrap();
    let image = read_layout(&image_dir).unwrap();
    let rootfs = tmp.path().join("rootfs");
    let base = 1 << 30;
    let ids = tpod_image::IdShift::new(base, 65536).unwrap();
    tpod_image::unpack_shifted(&image, &rootfs, ids).unwrap();

    let owner = |rel: &str| {
        let meta = fs::symlink_metadata(rootfs.join(rel)).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    };
    assert_eq!(owner(""), (base, base, 0o755), "the rootfs belongs to the container's root");
    assert_eq!(owner("home"), (base, base, 0o755), "a parent no layer lists belongs to root");
    assert_eq!(owner("home/app"), (base + 1000, base + 1001, 0o750));
    assert_eq!(owner("home/app/file"), (base + 1000, base + 1001, 0o640));
    assert_eq!(owner("home/app/link").0, base + 1000);
    // Chowned before its mode was set: the setuid bit stays.
    assert_eq!(owner("bin/su"), (base, base, 0o4755));
    // Outside the range: nobody, as the kernel shows an unmapped owner.
    assert_eq!(owner("far"), (base + 65534, base + 65534, 0o644));

    // Plain unpack leaves everything to the unpacking process.
    let plain = tmp.path().join("plain");
    unpack(&image, &plain).unwrap();
    assert_eq!(fs::metadata(plain.join("home/app/file")).unwrap().uid(), 0);
}

#[test]
fn id_shifts_stay_within_valid_ids() {
    assert!(tpod_image::IdShift::new(100_000, 0).is_none());
    assert!(tpod_image::IdShift::new(u32::MAX - 65535, 65536).is_none(), "would reach u32::MAX, which is -1");
    let ids = tpod_image::IdShift::new(u32::MAX - 65536, 65536).unwrap();
    assert_eq!(ids.host_id(u64::MAX), u32::MAX - 65536 + 65534);
    let tiny = tpod_image::IdShift::new(500, 10).unwrap();
    assert_eq!((tiny.host_id(3), tiny.host_id(10)), (503, 509));
}
