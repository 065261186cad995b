"""The options both Grid'5000 flavours take (``nxc start --help`` shows them under each
flavour's heading; a composition sets defaults in ``flavours.<flavour>.<option>``)."""

from __future__ import annotations

from nxc.runtime.options import Option

RESERVATION_OPTIONS: tuple[Option, ...] = (
    Option(
        "site",
        "Grid'5000 site of every role's nodes, or of one (default: $NXC_G5K_SITE).",
        per_role=True,
        metavar="[ROLE=]SITE",
    ),
    Option("cluster", "Cluster to reserve nodes on, for every role or one.", per_role=True),
    Option(
        "properties",
        'OAR properties the nodes must have, for every role or one (e.g. "memnode > 100000").',
        per_role=True,
        metavar="[ROLE=]EXPR",
    ),
    Option("walltime", "OAR job walltime, hours[:minutes[:seconds]].", default="1:00:00"),
    Option("queue", "OAR queue.", default="default"),
    Option("g5k-project", "OAR project (production queue), if any.", metavar="PROJECT"),
    Option("job-type", "Extra OAR job type (repeatable, e.g. exotic).", multiple=True),
    Option(
        "reservation",
        "Advance reservation: start the job at this date (Europe/Paris time).",
        metavar="'YYYY-MM-DD hh:mm:ss'",
    ),
    Option(
        "job-name",
        "OAR job name; a running or waiting job of yours with this name is reused "
        "(default: nxc-<composition>-<project hash>).",
    ),
    Option(
        "job",
        "Use this job you reserved yourself (oarsub) instead of submitting one (repeatable, "
        "one per site).",
        multiple=True,
        metavar="SITE:ID",
    ),
    Option(
        "keep-job",
        "Keep the OAR job when the deployment stops (the next start reuses it by name).",
        type="bool",
    ),
    Option(
        "job-timeout",
        "Seconds to wait for the OAR job to start running.",
        type="float",
        default=3600.0,
        minimum=1,
        metavar="SECONDS",
    ),
    Option(
        "g5k-config",
        "Grid'5000 API credentials file (default: $NXC_G5K_CONFIG, then "
        "NXC_G5K_USER/NXC_G5K_PASSWORD, then ~/.python-grid5000.yaml).",
        metavar="FILE",
    ),
    Option(
        "ssh-config",
        "OpenSSH config reaching the nodes (default: $NXC_G5K_SSH_CONFIG, else ~/.ssh/config).",
        metavar="FILE",
    ),
    Option(
        "known-hosts",
        "Host keys of the nodes' standard environment (default: $NXC_G5K_KNOWN_HOSTS, "
        "else ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts).",
        metavar="FILE",
    ),
    Option(
        "consoles",
        "Directory of <node FQDN>.log console captures, quoted when a node fails "
        "(default: $NXC_G5K_CONSOLES; the rehearsal testbed writes one).",
        metavar="DIR",
    ),
    Option(
        "stdenv-timeout",
        "Seconds to wait for reserved nodes to answer ssh in their standard environment "
        "(they may still be rebooting from the previous job).",
        type="float",
        default=180.0,
        minimum=0,
        metavar="SECONDS",
    ),
    Option(
        "experiment-nic",
        "Device name (in the standard environment) of the NIC the experiment uses "
        "(default: the NIC of the node's default route).",
        metavar="DEVICE",
    ),
)

PUSH_OPTIONS: tuple[Option, ...] = (
    Option(
        "push",
        "How kernel and initrd reach the nodes: sftp (pushed to each node) or shared "
        "(copied once into --shared-dir, which the nodes see at the same path: the NFS home).",
        type="choice",
        choices=("sftp", "shared"),
        default="sftp",
    ),
    Option(
        "shared-dir",
        "With --push shared: a directory of this machine mounted at the same path on the "
        "nodes (default: ~/.cache/nxc/g5k, in the NFS home).",
        metavar="DIR",
    ),
)

# Kadeploy through the deployments endpoint: g5k-image's role images, and the standard
# environment g5k-ramdisk deploys first in a deploy job.
DEPLOY_OPTIONS: tuple[Option, ...] = (
    Option(
        "deploy-timeout",
        "Seconds to wait for Kadeploy's deployments (retries included).",
        type="float",
        default=1800.0,
        minimum=1,
        metavar="SECONDS",
    ),
    Option(
        "deploy-retries",
        "How many times nodes that Kadeploy reports KO are deployed again.",
        type="int",
        default=2,
        minimum=0,
    ),
)

DEFAULT_STDENV = "debian12-min"
STDENV_OPTIONS: tuple[Option, ...] = (
    Option(
        "deploy-env",
        "In a deploy job (--job-type deploy): the Grid'5000 environment deployed first, with "
        "the deployment's key for root, before the kexec (it needs kexec-tools).",
        default=DEFAULT_STDENV,
        metavar="NAME",
    ),
    *DEPLOY_OPTIONS,
)

IMAGE_OPTIONS: tuple[Option, ...] = (
    Option(
        "publish",
        "Where Kadeploy fetches the images: public (copied into --public-dir, served at "
        "--public-url: ~/public on Grid'5000), serve (nxc serves them over HTTP itself), "
        "auto (public when a public directory is set or ~/public exists).",
        type="choice",
        choices=("auto", "public", "serve"),
        default="auto",
    ),
    Option(
        "serve-address",
        "With --publish serve: the address to serve on (one Kadeploy can reach).",
        default="127.0.0.1",
        metavar="ADDRESS",
    ),
    Option(
        "public-dir",
        "Directory served over http(s) where images are published (default: "
        "$NXC_G5K_PUBLIC_DIR, else ~/public).",
        metavar="DIR",
    ),
    Option(
        "public-url",
        "URL of --public-dir (default: $NXC_G5K_PUBLIC_URL, else "
        "http://public.<site>.grid5000.fr/~<user>).",
        metavar="URL",
    ),
    *DEPLOY_OPTIONS,
)
