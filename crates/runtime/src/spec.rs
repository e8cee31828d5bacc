//! Turning a [`ContainerSpec`] and its image config into an OCI runtime spec (`config.json`).
//!
//! The base is oci-spec's standard default (the same as `runc spec`): `/proc`, a tmpfs `/dev`,
//! `/dev/pts`, `/dev/shm`, `/dev/mqueue`, a read-only `/sys`, masked and read-only kernel paths,
//! a small capability set, no new privileges. Changes from it:
//! - no cgroup namespace and no `/sys/fs/cgroup` mount: this host has a hybrid v1/v2 layout and
//!   a pod has no business reading its cgroups;
//! - the user namespace is the pod's (a path, see [`crate::userns`]), joined first: the
//!   container's root is the pod's first host id, and the pid, mount, uts and ipc namespaces the
//!   container creates are owned by it (so it may mount its own `/proc`, `/sys`, `/dev/mqueue`);
//! - the network namespace is the pod's (a path), owned by that user namespace and shared by all
//!   its containers;
//! - `/etc/hosts` is bind-mounted read-only from the bundle, so the image's rootfs is never
//!   written through a path it controls (its `/etc` could be a symlink);
//! - a writable rootfs (images expect to write to it, as under Docker), [`ROOTFS`] in the
//!   bundle. The bundle is the container's tmpfs: the spec, which holds the container's command,
//!   args and environment (opened from what the publisher sealed), is never on the disk;
//! - the rootfs and bind-mounted files are named by their paths under the shim's stage (see
//!   [`crate::userns`]), which the caller gives;
//! - the container's volume mounts, as recursive bind mounts of the volumes' host directories,
//!   read-write or read-only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, Spec,
};

use crate::{ContainerSpec, RuntimeError};

/// The `PATH` given when neither the image nor the spec sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period the CPU quota is expressed in, in microseconds (100 ms).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// Where the pieces of one container's runtime spec come from.
pub(crate) struct SpecInput<'a> {
    pub pod: &'a str,
    pub container: &'a ContainerSpec,
    pub hostname: &'a str,
    pub netns: &'a Path,
    /// The pod's pinned user namespace.
    pub userns: &'a Path,
    /// The rootfs, as the container's processes reach it.
    pub rootfs: &'a Path,
    pub hosts_file: &'a Path,
    pub cgroups_path: &'a str,
    /// The container's volume mounts, resolved to host paths.
    pub binds: &'a [Bind],
    /// The container's `pids.max` (at least 1).
    pub pids_limit: u64,
    /// The seccomp profile (see [`crate::sandbox`]).
    pub seccomp: &'a LinuxSeccomp,
}

/// A host directory bind-mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

/// The process arguments, with Kubernetes semantics: `command` replaces the image's
/// `Entrypoint` and `args` its `Cmd`; a `command` without `args` drops the image's `Cmd`.
pub(crate) fn process_args(pod: &str, container: &ContainerSpec) -> Result<Vec<String>, RuntimeError> {
    let image = container.image.config.config().as_ref();
    let entrypoint = image.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let cmd = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let args = match (&container.command, &container.args) {
        (Some(command), Some(args)) => [command.clone(), args.clone()].concat(),
        (Some(command), None) => command.clone(),
        (None, Some(args)) => [entrypoint, args.clone()].concat(),
        (None, None) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        return Err(RuntimeError::InvalidSpec {
            pod: pod.to_owned(),
            reason: format!("container {}: no command: the image has no Entrypoint or Cmd", container.name),
        });
    }
    Ok(args)
}

/// The environment: the image's `Env`, then the spec's variables over it, plus a default `PATH`.
pub(crate) fn environment(container: &ContainerSpec) -> Vec<String> {
    let mut env = BTreeMap::new();
    let image_env = container.image.config.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
    for entry in image_env {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        env.insert(name.to_owned(), value.to_owned());
    }
    env.extend(container.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.entry("PATH".to_owned()).or_insert_with(|| DEFAULT_PATH.to_owned());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The working directory: the spec's, else the image's, else `/`.
pub(crate) fn working_dir(container: &ContainerSpec) -> String {
    container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| container.image.config.config().as_ref().and_then(|c| c.working_dir().clone()))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

/// The `/etc/hosts` a container sees.
pub(crate) fn hosts_file(hostname: &str, ip: Ipv4Addr) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n")
}

/// Where the rootfs is in a container's bundle (its `mem/` tmpfs), next to `config.json`.
pub(crate) const ROOTFS: &str = "rootfs";

/// Builds the runtime spec.
pub(crate) fn runtime_spec(input: &SpecInput<'_>) -> Result<Spec, RuntimeError> {
    let spec_error = |e: oci_spec::OciSpecError| RuntimeError::InvalidSpec {
        pod: input.pod.to_owned(),
        reason: format!("container {}: building the runtime spec: {e}", input.container.name),
    };
    let mut spec = Spec::default();
    spec.set_hostname(Some(input.hostname.to_owned()));

    let mut root = oci_spec::runtime::Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(false));
    spec.set_root(Some(root));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_args(Some(process_args(input.pod, input.container)?));
    process.set_env(Some(environment(input.container)));
    process.set_cwd(PathBuf::from(working_dir(input.container)));
    // Stated rather than left to oci-spec's defaults (which are the same today): no privilege
    // gained through setuid files or file capabilities, and only these three capabilities, as
    // Kubernetes' restricted profile allows (no CAP_NET_RAW: no raw or packet sockets).
    process.set_no_new_privileges(Some(true));
    process.set_capabilities(Some(oci_spec::runtime::LinuxCapabilities::default()));
    spec.set_process(Some(process));

    let mut mounts: Vec<Mount> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    mounts.push(
        MountBuilder::default()
            .destination("/etc/hosts")
            .typ("bind")
            .source(input.hosts_file)
            .options(vec!["rbind".to_owned(), "ro".to_owned()])
            .build()
            .map_err(spec_error)?,
    );
    for bind in input.binds {
        let access = if bind.read_only { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(&bind.destination)
                .typ("bind")
                .source(&bind.source)
                .options(vec!["rbind".to_owned(), access.to_owned()])
                .build()
                .map_err(spec_error)?,
        );
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| {
            !matches!(ns.typ(), LinuxNamespaceType::Network | LinuxNamespaceType::Cgroup | LinuxNamespaceType::User)
        })
        .collect();
    // Joined, not created: no id mappings in the spec (libcontainer writes maps only for a user
    // namespace it creates). It enters it before anything else, whatever the order here.
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .path(input.userns)
            .build()
            .map_err(spec_error)?,
    );
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(input.netns)
            .build()
            .map_err(spec_error)?,
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(input.cgroups_path)));

    let mut resources = LinuxResourcesBuilder::default();
    if input.container.cpu_millis > 0 {
        // cpu_millis thousandths of a CPU = cpu_millis * 100 µs per 100 000 µs period.
        let quota = i64::try_from(input.container.cpu_millis.saturating_mul(CPU_PERIOD_US / 1000)).unwrap_or(i64::MAX);
        resources =
            resources.cpu(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD_US).build().map_err(spec_error)?);
    }
    if input.container.memory_bytes > 0 {
        let limit = i64::try_from(input.container.memory_bytes).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build().map_err(spec_error)?);
    }
    let pids = i64::try_from(input.pids_limit.max(1)).unwrap_or(i64::MAX);
    resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build().map_err(spec_error)?);
    linux.set_resources(Some(resources.devices(vec![]).build().map_err(spec_error)?));
    linux.set_seccomp(Some(input.seccomp.clone()));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> (tempfile::TempDir, ContainerSpec) {
        let dir = tempfile::tempdir().unwrap();
        let config = tpod_image::ContainerConfig {
            entrypoint: vec!["/bin/entry".to_owned()],
            cmd: vec!["default-arg".to_owned()],
            env: vec!["PATH=/bin".to_owned(), "FROM_IMAGE=1".to_owned(), "OVERRIDDEN=image".to_owned()],
            working_dir: Some("/srv".to_owned()),
            exposed_ports: Vec::new(),
        };
        tpod_image::write_layout(dir.path(), &[], &config).unwrap();
        let image = tpod_image::read_layout(dir.path()).unwrap();
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        let spec = ContainerSpec {
            name: "c".to_owned(),
            image,
            command: command.map(strings),
            args: args.map(strings),
            env: BTreeMap::from([("OVERRIDDEN".to_owned(), "spec".to_owned())]),
            working_dir: None,
            cpu_millis: 1500,
            memory_bytes: 1 << 20,
            pids_limit: 0,
            mounts: Vec::new(),
        };
        (dir, spec)
    }

    #[test]
    fn args_follow_kubernetes_semantics() {
        let args = |command, args| process_args("p", &container(command, args).1).unwrap();
        assert_eq!(args(None, None), ["/bin/entry", "default-arg"]);
        assert_eq!(args(None, Some(&["x"])), ["/bin/entry", "x"]);
        assert_eq!(args(Some(&["/bin/other"]), None), ["/bin/other"]);
        assert_eq!(args(Some(&["/bin/other"]), Some(&["y"])), ["/bin/other", "y"]);
        let empty = process_args("p", &container(Some(&[]), Some(&[])).1).unwrap_err();
        assert!(empty.to_string().contains("no command"), "{empty}");
    }

    #[test]
    fn args_with_an_empty_list_present() {
        let args = |command, args| process_args("p", &container(command, args).1).unwrap();
        // Present but empty args drop the image's Cmd, as absent ones do not.
        assert_eq!(args(None, Some(&[])), ["/bin/entry"]);
        assert_eq!(args(Some(&["/bin/other"]), Some(&[])), ["/bin/other"]);
    }

    #[test]
    fn debug_shows_no_command_args_or_env_values() {
        let (_dir, mut spec) = container(Some(&["/bin/sh", "-c", "secret-arg"]), Some(&["secret-arg-2"]));
        spec.env.insert("TOKEN".to_owned(), "secret-env".to_owned());
        let debug = format!("{spec:?}");
        assert!(debug.contains("TOKEN") && debug.contains("Some(3)"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn env_and_working_dir_layer_spec_over_image() {
        let (_dir, mut spec) = container(None, None);
        assert_eq!(environment(&spec), ["FROM_IMAGE=1", "OVERRIDDEN=spec", "PATH=/bin"]);
        assert_eq!(working_dir(&spec), "/srv");
        spec.working_dir = Some("/work".to_owned());
        assert_eq!(working_dir(&spec), "/work");
    }

    #[test]
    fn runtime_spec_joins_the_pod_netns_with_limits() {
        let (_dir, spec) = container(None, None);
        let oci = runtime_spec(&SpecInput {
            pod: "p",
            container: &spec,
            hostname: "pod-x",
            netns: Path::new("/var/run/netns/tpod-x"),
            userns: Path::new("/pod/userns"),
            rootfs: Path::new("/stage/containers/c/mem/rootfs"),
            hosts_file: Path::new("/b/hosts"),
            cgroups_path: "/tpod/x-c",
            binds: &[Bind { source: "/pod/volumes/v/dir".into(), destination: "/data".into(), read_only: true }],
            pids_limit: 77,
            seccomp: &crate::sandbox::profile(&[]).unwrap(),
        })
        .unwrap();
        let root = oci.root().as_ref().unwrap();
        assert_eq!(
            (root.path().as_path(), root.readonly()),
            (Path::new("/stage/containers/c/mem/rootfs"), Some(false))
        );
        let linux = oci.linux().as_ref().unwrap();
        let namespaces = linux.namespaces().as_ref().unwrap();
        let network = namespaces.iter().find(|n| n.typ() == LinuxNamespaceType::Network).unwrap();
        assert_eq!(network.path().as_deref(), Some(Path::new("/var/run/netns/tpod-x")));
        let user = namespaces.iter().find(|n| n.typ() == LinuxNamespaceType::User).unwrap();
        assert_eq!(user.path().as_deref(), Some(Path::new("/pod/userns")));
        assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
        assert!(!namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
        for own in
            [LinuxNamespaceType::Pid, LinuxNamespaceType::Mount, LinuxNamespaceType::Uts, LinuxNamespaceType::Ipc]
        {
            assert!(namespaces.iter().any(|n| n.typ() == own && n.path().is_none()), "{own:?}");
        }
        let resources = linux.resources().as_ref().unwrap();
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(1 << 20));
        assert_eq!(resources.pids().as_ref().map(|p| p.limit()), Some(77));
        assert!(linux.seccomp().is_some());
        let process = oci.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let bounding = process.capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert!(!bounding.contains(&oci_spec::runtime::Capability::NetRaw));
        assert!(!bounding.contains(&oci_spec::runtime::Capability::SysAdmin));
        assert_eq!(oci.process().as_ref().unwrap().terminal(), Some(false));
        let mounts = oci.mounts().as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.destination() == Path::new("/etc/hosts")));
        let data = mounts.iter().find(|m| m.destination() == Path::new("/data")).unwrap();
        assert_eq!(data.source().as_deref(), Some(Path::new("/pod/volumes/v/dir")));
        assert_eq!(
            (data.typ().as_deref(), data.options().as_deref()),
            (Some("bind"), Some(&["rbind".to_owned(), "ro".to_owned()][..]))
        );
    }
}
