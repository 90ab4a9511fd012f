/**
 * The one source of bake.yml's shape: the validator (ajv) and schema/bake.schema.json are both
 * generated from these TypeBox definitions, and the TypeScript types below come from them too.
 */
import { Type, type Static } from "@sinclair/typebox";

const Scalar = Type.Union([Type.String(), Type.Number(), Type.Boolean()]);
const StringMap = Type.Record(Type.String(), Scalar, { description: "NAME: value pairs" });
const NonEmpty = Type.String({ minLength: 1 });

export const DebootstrapSchema = Type.Object(
  {
    suite: Type.String({ minLength: 1, description: "Debian suite, e.g. bookworm" }),
    variant: Type.Optional(Type.String({ minLength: 1, description: "debootstrap --variant, e.g. minbase" })),
    include: Type.Optional(Type.Array(NonEmpty, { description: "extra packages (debootstrap --include)" })),
    mirror: Type.Optional(
      Type.String({ minLength: 1, description: "Debian mirror URL; debootstrap's default when absent" }),
    ),
  },
  { additionalProperties: false },
);

export const RootfsSchema = Type.Object(
  {
    debootstrap: Type.Optional(DebootstrapSchema),
    tar: Type.Optional(Type.String({ minLength: 1, description: "path to a rootfs tarball" })),
  },
  { additionalProperties: false, description: "exactly one of debootstrap | tar" },
);

export const HealthSchema = Type.Object(
  {
    http: Type.Optional(Type.String({ minLength: 1, description: "path probed with HTTP GET, e.g. /healthz" })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    cmd: Type.Optional(Type.Array(NonEmpty, { minItems: 1, description: "command run inside the container" })),
    interval: Type.Optional(Type.Integer({ minimum: 1, description: "seconds" })),
    timeout: Type.Optional(Type.Integer({ minimum: 1, description: "seconds" })),
    retries: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);

export const RunSchema = Type.Object(
  {
    ports: Type.Optional(
      Type.Array(Type.Union([Type.String(), Type.Integer()]), {
        description: '"8080", "8080:80" or "127.0.0.1:8080:80"',
      }),
    ),
    env: Type.Optional(StringMap),
    pass_env: Type.Optional(
      Type.Array(NonEmpty, { description: "names read from the environment when the container starts" }),
    ),
    command: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    health: Type.Optional(HealthSchema),
  },
  { additionalProperties: false, description: "the runtime contract shared by `bake up` and Ansible" },
);

/** A goss spec (goss's own YAML, templated as goss does), with an optional --vars file. */
export const TestSchema = Type.Union(
  [
    Type.String({ minLength: 1 }),
    Type.Object(
      {
        spec: NonEmpty,
        vars: Type.Optional(NonEmpty),
        retry_timeout: Type.Optional(
          Type.String({
            pattern: "^[0-9]+(ms|s|m)$",
            description: "how long goss retries failing checks (a service still starting); default 30s",
          }),
        ),
        sleep: Type.Optional(
          Type.String({ pattern: "^[0-9]+(ms|s|m)$", description: "goss's pause between tries; default 1s" }),
        ),
      },
      { additionalProperties: false },
    ),
  ],
  {
    description:
      "a goss spec file (or { spec, vars }): run in a container of the new image before any tag moves; on an AMI, in the booted host and before the snapshot",
  },
);

export const ImageSchema = Type.Object(
  {
    parent: Type.Optional(NonEmpty),
    rootfs: Type.Optional(RootfsSchema),
    from: Type.Optional(Type.String({ minLength: 1, description: "an upstream image reference" })),
    dockerfile: Type.Optional(NonEmpty),
    context: Type.Optional(NonEmpty),
    args: Type.Optional(StringMap),
    run: Type.Optional(RunSchema),
    test: Type.Optional(TestSchema),
    secrets: Type.Optional(
      Type.Record(
        Type.String(),
        Type.Object(
          { env: Type.Optional(Type.String({ minLength: 1 })), file: Type.Optional(Type.String({ minLength: 1 })) },
          { additionalProperties: false },
        ),
        {
          description:
            "build secrets by id, for RUN --mount=type=secret,id=<id>: from an environment variable or a file; never in a layer, label, key or log",
        },
      ),
    ),
  },
  { additionalProperties: false },
);

export const AmiSchema = Type.Object(
  {
    builder: Type.Union([Type.Literal("ebs"), Type.Literal("instance-store")]),
    bundle: Type.Optional(
      Type.Object(
        { s3_bucket: NonEmpty, account_id: Type.Union([Type.String(), Type.Integer()]) },
        { additionalProperties: false },
      ),
    ),
    region: NonEmpty,
    copy_to: Type.Optional(Type.Array(NonEmpty)),
    share_with: Type.Optional(Type.Array(Type.Union([Type.String(), Type.Integer()]))),
    source: Type.Object(
      { owners: Type.Array(Type.Union([Type.String(), Type.Integer()]), { minItems: 1 }), name: NonEmpty },
      { additionalProperties: false },
    ),
    instance_type: NonEmpty,
    playbook: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "the AMI's own Ansible playbook (optional): bake installs the engine and its agent before it, the shipped images and services after it",
      }),
    ),
    engine: Type.Optional(
      Type.Union([Type.Literal("bake"), Type.Literal("own")], {
        description:
          "who installs the Docker engine on the host: bake (default: Debian's docker.io, before the playbook) or own (the source image or the playbook brings it)",
      }),
    ),
    preload: Type.Optional(Type.Array(NonEmpty)),
    services: Type.Optional(Type.Array(NonEmpty)),
    release_images: Type.Optional(
      Type.Array(NonEmpty, {
        description:
          "images of preload: that change with every release: on a staged bake they ship in the release stage, with the services, instead of the host stage",
      }),
    ),
    retention: Type.Optional(Type.Object({ keep: Type.Integer({ minimum: 1 }) }, { additionalProperties: false })),
    local: Type.Optional(
      Type.Object(
        {
          image: Type.String({
            minLength: 1,
            description: "the image the local host starts from (--target local); it needs systemd (systemd-sysv)",
          }),
        },
        { additionalProperties: false, description: "the local target: a systemd host started from one of images:" },
      ),
    ),
    vm: Type.Optional(
      Type.Object(
        {
          rootfs: Type.Object(
            { debootstrap: DebootstrapSchema },
            {
              additionalProperties: false,
              description:
                "the disk the VM host starts from: a debootstrap spec with a kernel, systemd, sshd and python3 (Ansible)",
            },
          ),
          disk_size: Type.Optional(
            Type.String({ pattern: "^[1-9][0-9]*[MG]$", description: "size of the host's disk, e.g. 4G (default 4G)" }),
          ),
          memory: Type.Optional(Type.Integer({ minimum: 256, description: "MiB of memory for the VM (default 2048)" })),
          cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: "virtual CPUs (default 2)" })),
        },
        {
          additionalProperties: false,
          description:
            "the vm target: the host baked into a bootable disk with Packer's qemu builder and boot-tested under QEMU, its own engine inside",
        },
      ),
    ),
    test: Type.Optional(TestSchema),
    runtime_env: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "where the host reads its services' pass_env values at boot (docker --env-file format; user-data writes it); default /etc/bake/runtime.env",
      }),
    ),
  },
  { additionalProperties: false },
);

export const BakeFileSchema = Type.Object(
  {
    project: Type.String({ minLength: 1, description: "prefix of image repositories and AMI names" }),
    registry: Type.Optional(Type.String({ description: "host[:port][/path]; empty = local only" })),
    images: Type.Record(Type.String(), ImageSchema, { minProperties: 1 }),
    amis: Type.Optional(Type.Record(Type.String(), AmiSchema)),
  },
  {
    additionalProperties: false,
    title: "bake.yml",
    description: "A bake pipeline: container images (base → service → release) and AMIs.",
  },
);

export type BakeFile = Static<typeof BakeFileSchema>;
export type ImageEntry = Static<typeof ImageSchema>;
export type AmiEntry = Static<typeof AmiSchema>;
export type RunEntry = Static<typeof RunSchema>;
export type TestEntry = Static<typeof TestSchema>;

/** The JSON Schema document written to schema/bake.schema.json. */
export function jsonSchemaDocument(): Record<string, unknown> {
  return { $schema: "http://json-schema.org/draft-07/schema#", ...JSON.parse(JSON.stringify(BakeFileSchema)) };
}
export type DebootstrapEntry = Static<typeof DebootstrapSchema>;
