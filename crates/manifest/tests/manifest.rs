//! Manifest parsing and validation, end to end: every rule has a failing example whose error names
//! the exact `file:line:column: path: message`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tpod_manifest::{
    ImageKind, MAX_MANIFEST_BYTES, ManifestError, Protocol, Replicas, Resources, RestartPolicy, SAMPLE, VolumeSource,
    load, parse,
};

const FILE: &str = "hello.yaml";

/// Parses `source`, expecting failure, and returns every error as its display string.
fn errors(source: &str) -> Vec<String> {
    match parse(source, Path::new(FILE)) {
        Ok(manifest) => panic!("expected errors, parsed {manifest:?}"),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that parsing `source` fails with exactly `expected` (in source order).
fn assert_errors(source: &str, expected: &[&str]) {
    assert_eq!(errors(source), expected, "for manifest:\n{source}");
}

#[test]
fn sample_parses() {
    let manifest = parse(SAMPLE, Path::new("sample.yaml")).unwrap();
    assert_eq!(manifest.name, "hello");
    assert_eq!(manifest.containers.len(), 1);
    let web = &manifest.containers[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.image.reference, "./image");
    assert_eq!(web.image.kind, ImageKind::LocalPath);
    assert_eq!(web.image.local_path(Path::new("/pods")), Some(Path::new("/pods/./image").to_path_buf()));
    assert_eq!(web.ports.len(), 1);
    assert_eq!(web.ports[0].container_port, 8080);
    assert_eq!(web.ports[0].protocol, Protocol::Http);
    assert_eq!(web.resources, Resources { cpu_millis: 100, memory_bytes: 64 << 20, gpu: 0, pids: None });
    assert_eq!(manifest.replicas, Replicas::default());
    assert!(manifest.volumes.is_empty());
}

#[test]
fn full_manifest_parses_and_serializes() {
    let source = r#"name: shop
containers:
  - name: web
    image: registry.example.com/app:1.0
    command: ["/bin/app"]
    args: ["--port", "8080"]
    env: {RUST_LOG: info, _X1: "", EMPTY:}
    workingDir: /srv
    ports:
      - containerPort: 8080
        hostname: shop.example.com
      - containerPort: 9000
        protocol: tcp
    resources: {cpu: "0.5", memory: 1Gi, gpu: 1, pids: 64}
    volumeMounts:
      - {name: data, mountPath: /data}
      - {name: creds, mountPath: /run/secrets, readOnly: true}
  - name: sidecar
    image: ../sidecar.tar
    resources: {cpu: 2, memory: 12345}
volumes:
  - name: data
    filesystem: {size: 10Gi}
  - name: creds
    secret: {file: ./secret.txt}
  - name: scratch
    emptyDir: {size: 512Mi}
  - name: scratch2
    emptyDir:
replicas: {min: 0, max: 1}
"#;
    let manifest = parse(source, Path::new(FILE)).unwrap();
    let web = &manifest.containers[0];
    assert_eq!(web.image.kind, ImageKind::Registry);
    assert_eq!(web.image.local_path(Path::new("/x")), None);
    assert_eq!(web.command.as_deref(), Some(&["/bin/app".to_owned()][..]));
    assert_eq!(web.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(web.env.get("EMPTY").map(String::as_str), Some(""));
    assert_eq!(web.working_dir.as_deref(), Some("/srv"));
    assert_eq!(web.ports[0].hostname.as_deref(), Some("shop.example.com"));
    assert_eq!(web.ports[1].protocol, Protocol::Tcp);
    assert_eq!(web.resources, Resources { cpu_millis: 500, memory_bytes: 1 << 30, gpu: 1, pids: Some(64) });
    assert!(web.volume_mounts[1].read_only);
    let sidecar = &manifest.containers[1];
    assert_eq!(sidecar.command, None);
    assert_eq!(sidecar.resources, Resources { cpu_millis: 2000, memory_bytes: 12345, gpu: 0, pids: None });
    assert_eq!(manifest.volumes[0].source, VolumeSource::Filesystem { size_bytes: 10 << 30 });
    assert_eq!(manifest.volumes[1].source, VolumeSource::Secret { file: "./secret.txt".into() });
    assert_eq!(manifest.volumes[2].source, VolumeSource::EmptyDir { size_bytes: Some(512 << 20) });
    assert_eq!(manifest.volumes[3].source, VolumeSource::EmptyDir { size_bytes: None });
    assert_eq!(manifest.replicas, Replicas { min: 0, max: 1, ..Replicas::default() });

    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(json["containers"][0]["resources"]["cpuMillis"], 500);
    assert_eq!(json["containers"][0]["resources"]["pids"], 64);
    assert_eq!(json["containers"][0]["volumeMounts"][1]["mountPath"], "/run/secrets");
    assert_eq!(json["volumes"][0]["source"]["filesystem"]["sizeBytes"], 10u64 << 30);
}

/// A valid manifest whose lines the failing examples below replace, so positions are easy to read.
const BASE: &str = "name: hello
containers:
  - name: web
    image: ./image
    ports:
      - containerPort: 8080
    resources: {cpu: 100m, memory: 64Mi}
";

#[test]
fn base_parses() {
    parse(BASE, Path::new(FILE)).unwrap();
}

#[test]
fn port_out_of_range() {
    let source =
        BASE.replace("      - containerPort: 8080\n", "      - containerPort: 8080\n      - containerPort: 70000\n");
    assert_errors(
        &source,
        &["hello.yaml:7:24: containers[0].ports[1].containerPort: must be an integer from 1 to 65535"],
    );
    let source = BASE.replace("containerPort: 8080", "containerPort: 0");
    assert_errors(
        &source,
        &["hello.yaml:6:24: containers[0].ports[0].containerPort: must be an integer from 1 to 65535"],
    );
    let source = BASE.replace("containerPort: 8080", "containerPort: http");
    assert_errors(
        &source,
        &["hello.yaml:6:24: containers[0].ports[0].containerPort: must be an integer from 1 to 65535"],
    );
}

#[test]
fn pod_name_must_be_a_dns_label() {
    for bad in ["Hello", "-hello", "hello-", "hel_lo", "a.b", &"a".repeat(64)] {
        let source = BASE.replace("name: hello", &format!("name: {bad}"));
        assert_errors(
            &source,
            &["hello.yaml:1:7: name: must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"],
        );
    }
    assert_errors(&BASE.replace("name: hello", "name:"), &["hello.yaml:1:1: missing required field `name`"]);
    assert_errors(
        &BASE.replace("name: hello", "name: [a]"),
        &["hello.yaml:1:7: name: expected a string, found a sequence"],
    );
}

#[test]
fn container_name_must_be_a_dns_label() {
    let source = BASE.replace("name: web", "name: Web");
    assert_errors(
        &source,
        &[
            "hello.yaml:3:11: containers[0].name: must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ],
    );
}

const TWO_CONTAINERS: &str = "name: hello
containers:
  - name: web
    image: ./image
    resources: {cpu: 100m, memory: 64Mi}
  - name: web
    image: busybox:1.36
    resources: {cpu: 100m, memory: 64Mi}
";

#[test]
fn duplicate_container_names() {
    assert_errors(
        TWO_CONTAINERS,
        &["hello.yaml:6:11: containers[1].name: duplicate container name `web` (first used by containers[0])"],
    );
}

#[test]
fn container_count() {
    assert_errors(
        &BASE.replace("containers:\n", "containers: []\nx:\n"),
        &[
            "hello.yaml:2:13: containers: must have 1 to 16 containers",
            "hello.yaml:3:1: x: unknown field `x`, expected one of `name`, `containers`, `volumes`, `replicas`, `restartPolicy`",
        ],
    );
    let many: String =
        (0..17).map(|i| format!("  - {{name: c{i}, image: ./image, resources: {{cpu: 1, memory: 1Mi}}}}\n")).collect();
    assert_errors(
        &format!("name: hello\ncontainers:\n{many}"),
        &["hello.yaml:3:3: containers: must have 1 to 16 containers"],
    );
    assert_errors("name: hello\n", &["hello.yaml:1:1: missing required field `containers`"]);
}

#[test]
fn unique_volume_names_and_mounts_refer_to_volumes() {
    let source = format!(
        "{BASE}    volumeMounts:
      - name: data
        mountPath: /data
      - name: missing
        mountPath: /missing
volumes:
  - name: data
    emptyDir: {{}}
  - name: data
    filesystem: {{size: 1Gi}}
"
    );
    assert_errors(
        &source,
        &[
            "hello.yaml:11:15: containers[0].volumeMounts[1].name: no volume named `missing` in `volumes`",
            "hello.yaml:16:11: volumes[1].name: duplicate volume name `data` (first used by volumes[0])",
        ],
    );
}

#[test]
fn volume_mount_paths() {
    let source = format!(
        "{BASE}    volumeMounts:
      - {{name: data, mountPath: data}}
      - {{name: data, mountPath: /a/../etc}}
      - {{name: data, mountPath: /data, readOnly: yes}}
      - {{name: data, mountPath: /data}}
volumes:
  - {{name: data, emptyDir: {{}}}}
"
    );
    assert_errors(
        &source,
        &[
            "hello.yaml:9:33: containers[0].volumeMounts[0].mountPath: must be an absolute path without `..` components",
            "hello.yaml:10:33: containers[0].volumeMounts[1].mountPath: must be an absolute path without `..` components",
            "hello.yaml:11:50: containers[0].volumeMounts[2].readOnly: expected `true` or `false`",
            "hello.yaml:12:33: containers[0].volumeMounts[3].mountPath: `/data` is already mounted by containers[0].volumeMounts[2]",
        ],
    );
}

#[test]
fn volumes_are_never_mounted_over_proc_sys_or_dev() {
    let source = format!(
        "{BASE}    volumeMounts:
      - {{name: data, mountPath: /proc}}
      - {{name: data, mountPath: /sys/fs/cgroup}}
      - {{name: data, mountPath: //dev/}}
      - {{name: data, mountPath: /dev/./shm}}
      - {{name: data, mountPath: /devices}}
      - {{name: data, mountPath: /srv/proc}}
volumes:
  - {{name: data, emptyDir: {{}}}}
"
    );
    let why = "volumes cannot be mounted over /proc, /sys or /dev";
    assert_errors(
        &source,
        &[
            &format!("hello.yaml:9:33: containers[0].volumeMounts[0].mountPath: `/proc` is at or under `/proc`: {why}"),
            &format!(
                "hello.yaml:10:33: containers[0].volumeMounts[1].mountPath: `/sys/fs/cgroup` is at or under `/sys`: {why}"
            ),
            &format!(
                "hello.yaml:11:33: containers[0].volumeMounts[2].mountPath: `//dev/` is at or under `/dev`: {why}"
            ),
            &format!(
                "hello.yaml:12:33: containers[0].volumeMounts[3].mountPath: `/dev/./shm` is at or under `/dev`: {why}"
            ),
        ],
    );
    assert_eq!(tpod_manifest::reserved_mount_path("/devices"), None);
    assert_eq!(tpod_manifest::reserved_mount_path("/srv/proc"), None);
}

#[test]
fn volume_needs_exactly_one_source() {
    let source = format!(
        "{BASE}volumes:
  - name: none
  - name: both
    emptyDir: {{}}
    secret: {{file: ./s}}
  - name: fs
    filesystem: {{size: 0}}
  - name: fs2
    filesystem: {{}}
  - name: sec
    secret: {{file: ./s, mode: 1}}
  - name: e
    emptyDir: {{x: 1}}
  - name: e2
    emptyDir: {{size: 0}}
"
    );
    assert_errors(
        &source,
        &[
            "hello.yaml:9:5: volumes[0]: must have exactly one of `emptyDir`, `filesystem` or `secret`",
            "hello.yaml:10:5: volumes[1]: must have exactly one of `emptyDir`, `filesystem` or `secret`",
            "hello.yaml:14:24: volumes[2].filesystem.size: must be greater than zero",
            "hello.yaml:16:17: volumes[3].filesystem: missing required field `size`",
            "hello.yaml:18:25: volumes[4].secret.mode: unknown field `mode`, expected one of `file`",
            "hello.yaml:20:16: volumes[5].emptyDir.x: unknown field `x`, expected one of `size`",
            "hello.yaml:22:22: volumes[6].emptyDir.size: must be greater than zero",
        ],
    );
}

#[test]
fn duplicate_container_port_across_containers() {
    let source = TWO_CONTAINERS
        .replace("  - name: web\n    image: busybox", "  - name: api\n    image: busybox")
        .replace("    image: ./image\n", "    image: ./image\n    ports: [{containerPort: 8080}]\n")
        .replace("    image: busybox:1.36\n", "    image: busybox:1.36\n    ports: [{containerPort: 8080}]\n");
    assert_errors(
        &source,
        &["hello.yaml:9:29: containers[1].ports[0].containerPort: port 8080 is already used by containers[0].ports[0]"],
    );
}

#[test]
fn hostnames() {
    let source = BASE.replace(
        "      - containerPort: 8080\n",
        "      - {containerPort: 8080, hostname: hello.example.com}
      - {containerPort: 8081, hostname: hello.example.com}
      - {containerPort: 8082, protocol: tcp, hostname: tcp.example.com}
      - {containerPort: 8083, hostname: Bad_Name}
      - {containerPort: 8084, protocol: udp}
",
    );
    assert_errors(
        &source,
        &[
            "hello.yaml:7:41: containers[0].ports[1].hostname: hostname `hello.example.com` is already used by containers[0].ports[0]",
            "hello.yaml:8:56: containers[0].ports[2].hostname: only http ports can have a hostname",
            "hello.yaml:9:41: containers[0].ports[3].hostname: must be a lowercase DNS name like `hello.example.com`",
            "hello.yaml:10:41: containers[0].ports[4].protocol: must be `http` or `tcp`",
        ],
    );
}

#[test]
fn resources_are_required() {
    assert_errors(
        &BASE.replace("    resources: {cpu: 100m, memory: 64Mi}\n", ""),
        &["hello.yaml:3:5: containers[0]: missing required field `resources`"],
    );
    assert_errors(
        &BASE.replace("{cpu: 100m, memory: 64Mi}", "{gpu: 1}"),
        &[
            "hello.yaml:7:16: containers[0].resources: missing required field `cpu`",
            "hello.yaml:7:16: containers[0].resources: missing required field `memory`",
        ],
    );
}

#[test]
fn resource_quantities() {
    let source = BASE.replace("{cpu: 100m, memory: 64Mi}", "{cpu: abc, memory: 1Qi, gpu: -1}");
    assert_errors(
        &source,
        &[
            "hello.yaml:7:22: containers[0].resources.cpu: `abc` is not a CPU quantity (expected millicores like `500m`, or cores like `0.5` or `2`)",
            "hello.yaml:7:35: containers[0].resources.memory: `1Qi` is not a byte quantity (expected a whole number, optionally with a suffix Ki, Mi, Gi, Ti, K, M, G or T)",
            "hello.yaml:7:45: containers[0].resources.gpu: must be an integer from 0 to 4294967295",
        ],
    );
    let source = BASE.replace("{cpu: 100m, memory: 64Mi}", "{cpu: 0, memory: 0Mi}");
    assert_errors(
        &source,
        &[
            "hello.yaml:7:22: containers[0].resources.cpu: must be greater than zero",
            "hello.yaml:7:33: containers[0].resources.memory: must be greater than zero",
        ],
    );
    let source = BASE.replace("{cpu: 100m, memory: 64Mi}", "{cpu: -1, memory: 64Mi}");
    assert_errors(
        &source,
        &[
            "hello.yaml:7:22: containers[0].resources.cpu: `-1` is not a CPU quantity (expected millicores like `500m`, or cores like `0.5` or `2`)",
        ],
    );
    for bad in ["0", "4194305", "-1", "many"] {
        let source = BASE.replace("{cpu: 100m, memory: 64Mi}", &format!("{{cpu: 1, memory: 1Mi, pids: {bad}}}"));
        assert_errors(
            &source,
            &["hello.yaml:7:44: containers[0].resources.pids: must be an integer from 1 to 4194304"],
        );
    }
}

#[test]
fn container_fields() {
    let source = BASE.replace(
        "    image: ./image\n",
        "    image: Not An Image
    command: /bin/sh
    args: [a, [b]]
    env: {GOOD: 1, 1BAD: x, bad-name: y, LIST: [1]}
    workingDir: relative
",
    );
    assert_errors(
        &source,
        &[
            "hello.yaml:4:12: containers[0].image: must be a local path starting with `./`, `../` or `/`, or a registry reference like `registry.example.com/app:1.0`",
            "hello.yaml:5:14: containers[0].command: expected a sequence, found a scalar",
            "hello.yaml:6:15: containers[0].args[1]: expected a string, found a sequence",
            "hello.yaml:7:20: containers[0].env.1BAD: environment variable names must match [A-Za-z_][A-Za-z0-9_]*",
            "hello.yaml:7:29: containers[0].env.bad-name: environment variable names must match [A-Za-z_][A-Za-z0-9_]*",
            "hello.yaml:7:48: containers[0].env.LIST: expected a string, found a sequence",
            "hello.yaml:8:17: containers[0].workingDir: must be an absolute path without `..` components",
        ],
    );
}

#[test]
fn replicas() {
    let with = |replicas: &str| format!("{BASE}replicas: {replicas}\n");
    assert_errors(&with("{min: 2, max: 1}"), &["hello.yaml:8:11: replicas: min (2) must not exceed max (1)"]);
    assert_errors(&with("{min: 0, max: 0}"), &["hello.yaml:8:25: replicas.max: must be an integer from 1 to 16"]);
    assert_errors(&with("{min: 0, max: 17}"), &["hello.yaml:8:25: replicas.max: must be an integer from 1 to 16"]);
    assert_errors(&with("{min: -1, max: 1}"), &["hello.yaml:8:17: replicas.min: must be an integer from 0 to 16"]);
    assert_errors(&with("{max: 1}"), &["hello.yaml:8:11: replicas: missing required field `min`"]);
    assert_eq!(
        parse(&with("{min: 0, max: 1}"), Path::new(FILE)).unwrap().replicas,
        Replicas { min: 0, max: 1, ..Replicas::default() }
    );
    assert_eq!(parse(BASE, Path::new(FILE)).unwrap().replicas, Replicas::default());
    let scaled = parse(&with("{min: 0, max: 2, idleTimeout: 5m, targetConcurrency: 10}"), Path::new(FILE)).unwrap();
    assert_eq!(
        scaled.replicas,
        Replicas { min: 0, max: 2, idle_timeout_secs: Some(300), target_concurrency: Some(10) }
    );
    assert_eq!(
        parse(&with("{min: 0, max: 1, idleTimeout: 45}"), Path::new(FILE)).unwrap().replicas.idle_timeout_secs,
        Some(45)
    );
    assert_errors(
        &with("{min: 0, max: 1, idleTimeout: 5d}"),
        &["hello.yaml:8:41: replicas.idleTimeout: must be a duration from 1s to 604800s, such as `30s`, `5m` or `1h`"],
    );
    // Replicas are separate instances: a filesystem volume would diverge between them.
    let shared = format!("{BASE}volumes:\n- name: data\n  filesystem: {{size: 1Gi}}\nreplicas: {{min: 1, max: 3}}\n");
    assert_errors(
        &shared,
        &["hello.yaml:11:25: replicas.max: 3 replicas cannot share the filesystem volume `data`: each replica would \
           write its own copy; use max: 1, or an emptyDir for per-replica scratch space"],
    );
    let scratch = format!("{BASE}volumes:\n- name: tmp\n  emptyDir: {{}}\nreplicas: {{min: 1, max: 3}}\n");
    assert_eq!(parse(&scratch, Path::new(FILE)).unwrap().replicas.max, 3);
    assert_errors(
        &with("{min: 0, max: 1, targetConcurrency: 0}"),
        &["hello.yaml:8:47: replicas.targetConcurrency: must be an integer from 1 to 10000"],
    );
}

#[test]
fn restart_policy() {
    let with = |policy: &str| format!("{BASE}restartPolicy: {policy}\n");
    assert_eq!(parse(BASE, Path::new(FILE)).unwrap().restart_policy, RestartPolicy::Always);
    for (text, policy) in
        [("Always", RestartPolicy::Always), ("OnFailure", RestartPolicy::OnFailure), ("Never", RestartPolicy::Never)]
    {
        assert_eq!(parse(&with(text), Path::new(FILE)).unwrap().restart_policy, policy, "{text}");
    }
    // Spelled as Kubernetes spells them: other cases are refused, at the value.
    assert_errors(
        &with("never"),
        &["hello.yaml:8:16: restartPolicy: unknown restart policy `never`, expected `Always`, `OnFailure` or `Never`"],
    );
    assert_errors(&with("[Never]"), &["hello.yaml:8:16: restartPolicy: expected a string, found a sequence"]);
    // Pod-level, as in Kubernetes: not a container field.
    let in_container = BASE.replace("    resources:", "    restartPolicy: Never\n    resources:");
    assert_eq!(errors(&in_container).len(), 1);
    assert!(errors(&in_container)[0].starts_with("hello.yaml:7:5: containers[0].restartPolicy: unknown field"));
    let json = serde_json::to_value(parse(&with("OnFailure"), Path::new(FILE)).unwrap()).unwrap();
    assert_eq!(json["restartPolicy"], "OnFailure");
}

#[test]
fn unknown_fields_top_level_and_nested() {
    assert_errors(
        &format!("{BASE}replica: 1\n"),
        &[
            "hello.yaml:8:1: replica: unknown field `replica`, expected one of `name`, `containers`, `volumes`, `replicas`, `restartPolicy`",
        ],
    );
    let source = BASE.replace("      - containerPort: 8080\n", "      - containerPort: 8080\n        hostPort: 80\n");
    assert_errors(
        &source,
        &[
            "hello.yaml:7:9: containers[0].ports[0].hostPort: unknown field `hostPort`, expected one of `containerPort`, `protocol`, `hostname`",
        ],
    );
    let source = BASE.replace("image: ./image", "imag: ./image");
    assert_errors(
        &source,
        &[
            "hello.yaml:3:5: containers[0]: missing required field `image`",
            "hello.yaml:4:5: containers[0].imag: unknown field `imag`, expected one of `name`, `image`, `command`, `args`, `env`, `workingDir`, `ports`, `resources`, `volumeMounts`",
        ],
    );
}

#[test]
fn malformed_yaml() {
    let errs = errors("name: hello\ncontainers: [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("hello.yaml:3:1: invalid YAML: "), "{errs:?}");
    let errs = errors("name: hello\n  bad: indent\n");
    assert!(errs[0].starts_with("hello.yaml:2:"), "{errs:?}");
    assert!(errs[0].contains("invalid YAML"), "{errs:?}");
    assert_errors("name: a\nname: b\n", &["hello.yaml:2:1: duplicate key `name`"]);
    assert_errors("", &["hello.yaml:1:1: the manifest is empty"]);
    assert_errors("# only a comment\n", &["hello.yaml:1:1: the manifest is empty"]);
    assert_errors("- a\n", &["hello.yaml:1:1: expected a mapping, found a sequence"]);
    assert_errors("a: &x 1\nb: *x\n", &["hello.yaml:2:4: YAML aliases are not supported in manifests"]);
    assert_errors(&format!("{BASE}---\nname: other\n"), &["hello.yaml:8:1: a manifest must be a single YAML document"]);
}

#[test]
fn size_and_depth_limits() {
    let padding = "#".repeat(MAX_MANIFEST_BYTES);
    let big = format!("{BASE}{padding}\n");
    let errs = parse(&big, Path::new(FILE)).unwrap_err();
    assert!(matches!(errs.errors(), [ManifestError::TooLarge { .. }]));
    assert_eq!(errs.to_string(), "hello.yaml: manifest is larger than the 1048576-byte limit");

    // The top-level mapping is the first level, so the 64th bracket (column 67) is one too many.
    let deep = format!("{BASE}x: {}{}\n", "[".repeat(64), "]".repeat(64));
    assert_errors(&deep, &["hello.yaml:8:67: nesting deeper than 64 levels"]);
}

#[test]
fn several_errors_are_all_reported_in_order() {
    let source = "name: Bad
containers:
  - name: web
    image: ./image
    resources: {cpu: 0, memory: 64Mi}
    bogus: 1
replicas: {min: 3, max: 2}
";
    let errs = parse(source, Path::new(FILE)).unwrap_err();
    assert_eq!(errs.errors().len(), 4);
    let text = errs.to_string();
    assert_eq!(text.lines().count(), 4);
    assert!(text.starts_with("hello.yaml:1:7: name: "), "{text}");
    assert!(text.contains("\nhello.yaml:5:22: containers[0].resources.cpu: must be greater than zero\n"), "{text}");
    assert!(text.contains("\nhello.yaml:6:5: containers[0].bogus: unknown field `bogus`"), "{text}");
    assert!(text.ends_with("hello.yaml:7:11: replicas: min (3) must not exceed max (2)"), "{text}");
    let location = errs.errors()[0].location().unwrap();
    assert_eq!((location.line, location.column), (1, 7));
}

#[test]
fn load_reads_files_and_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = dir.join("pod.yaml");
    std::fs::write(&good, SAMPLE).unwrap();
    assert_eq!(load(&good).unwrap().name, "hello");

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "name: hello\nfoo: 1\n").unwrap();
    let text = load(&bad).unwrap_err().to_string();
    assert!(text.contains(&format!("{}:2:1: foo: unknown field `foo`", bad.display())), "{text}");

    let big = dir.join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_MANIFEST_BYTES + 10]).unwrap();
    assert!(matches!(load(&big).unwrap_err().errors(), [ManifestError::TooLarge { .. }]));

    let missing = dir.join("missing.yaml");
    let text = load(&missing).unwrap_err().to_string();
    assert!(text.starts_with(&format!("{}: cannot read manifest: ", missing.display())), "{text}");
}

#[test]
fn mutated_samples_never_panic() {
    // A cheap fuzz: delete or replace each character of the sample with YAML-significant ones.
    // Every variant must parse or fail with located errors, never panic.
    let chars: Vec<char> = SAMPLE.chars().collect();
    for i in 0..chars.len() {
        for replacement in [None, Some(':'), Some('-'), Some('['), Some('{'), Some('"'), Some(' '), Some('\n')] {
            let mut mutated = chars.clone();
            match replacement {
                None => {
                    mutated.remove(i);
                }
                Some(c) => mutated[i] = c,
            }
            let mutated: String = mutated.into_iter().collect();
            if let Err(errors) = parse(&mutated, Path::new(FILE)) {
                assert!(!errors.errors().is_empty());
                for error in errors.errors() {
                    assert!(error.location().is_some_and(|l| l.line >= 1 && l.column >= 1), "{error}");
                }
            }
        }
    }
}
