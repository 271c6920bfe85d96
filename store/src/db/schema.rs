//! Schema migrations: step `i` (0-based) moves `PRAGMA user_version` from `i` to `i + 1`.
//! Append new steps; never edit a released one.

pub const MIGRATIONS: &[&str] = &[
    // 1: images, tags, layers, layer order, per-layer file index.
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,              -- config digest
        manifest_digest TEXT NOT NULL,
        manifest BLOB NOT NULL,           -- raw manifest bytes, as pulled/pushed
        manifest_media_type TEXT NOT NULL,
        config BLOB NOT NULL,             -- raw config JSON
        created TEXT,                     -- from the config, RFC 3339
        size INTEGER NOT NULL,            -- sum of uncompressed layer sizes
        added INTEGER NOT NULL            -- unix seconds when stored
    );
    CREATE TABLE tags (
        name TEXT PRIMARY KEY,            -- normalised registry/repository:tag
        image_id TEXT NOT NULL REFERENCES images(id)
    );
    CREATE INDEX tags_image ON tags(image_id);
    CREATE TABLE layers (
        digest TEXT PRIMARY KEY,          -- compressed blob digest
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,            -- compressed size
        diff_id TEXT NOT NULL,
        format TEXT NOT NULL,             -- tar, tar+gzip, tar+zstd, zstd:chunked
        state TEXT NOT NULL,              -- local (data.tar present) | lazy
        tar_size INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        layer_digest TEXT NOT NULL REFERENCES layers(digest),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_layer ON image_layers(layer_digest);
    CREATE TABLE layer_files (
        layer_digest TEXT PRIMARY KEY REFERENCES layers(digest) ON DELETE CASCADE,
        format TEXT NOT NULL,             -- json, or json+zstd (db/index_blob.rs)
        data BLOB NOT NULL
    );",
    // 2: where lazy (zstd:chunked) layers are fetched from.
    "CREATE TABLE layer_sources (
        layer_digest TEXT PRIMARY KEY REFERENCES layers(digest) ON DELETE CASCADE,
        reference TEXT NOT NULL,          -- repository the blob was pulled from
        size INTEGER NOT NULL             -- compressed blob size
    );",
    // 3: the `registry/repository@digest` names an image was pulled or pushed as (Docker's
    // RepoDigests).
    "CREATE TABLE repo_digests (
        name TEXT PRIMARY KEY,            -- normalised registry/repository@sha256:...
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX repo_digests_image ON repo_digests(image_id);",
    // 4: layers held by something other than an image (containerd snapshots served by the
    // snapshotter), so removing an image that shares them keeps them.
    "CREATE TABLE layer_holds (
        layer_digest TEXT NOT NULL REFERENCES layers(digest) ON DELETE CASCADE,
        holder TEXT NOT NULL,             -- e.g. containerd-snapshot:<id>
        PRIMARY KEY (layer_digest, holder)
    );",
    // 5: when the image was last tagged by a tag, commit, import or build (Docker's
    // `Metadata.LastTagTime`; a pull does not set it). RFC 3339, NULL when never.
    "ALTER TABLE images ADD COLUMN last_tag_time TEXT;",
];
