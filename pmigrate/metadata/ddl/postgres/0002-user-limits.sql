CREATE TABLE users (
    id text NOT NULL,
    provider text,
    login text,
    password text,
    name text,
    email text,
    is_admin boolean,
    max_file_size bigint,
    max_ttl bigint,
    created_at timestamp with time zone
);
CREATE TABLE tokens (
    token text NOT NULL,
    comment text,
    user_id character varying(256),
    created_at timestamp with time zone
);
CREATE TABLE uploads (
    id text NOT NULL,
    ttl bigint,
    remote_ip text,
    comments text,
    upload_token text,
    "user" text,
    token text,
    stream boolean,
    one_shot boolean,
    removable boolean,
    protected_by_password boolean,
    login text,
    password text,
    created_at timestamp with time zone,
    deleted_at timestamp with time zone,
    expire_at timestamp with time zone
);
CREATE TABLE files (
    id text NOT NULL,
    upload_id character varying(256),
    name text,
    status text,
    md5 text,
    type text,
    size bigint,
    reference text,
    backend_details text,
    created_at timestamp with time zone
);
CREATE TABLE settings (
    key text NOT NULL,
    value text
);
CREATE TABLE migrations (
    id character varying(255) NOT NULL
);
ALTER TABLE users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);
ALTER TABLE tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (token);
ALTER TABLE uploads
    ADD CONSTRAINT uploads_pkey PRIMARY KEY (id);
ALTER TABLE files
    ADD CONSTRAINT files_pkey PRIMARY KEY (id);
ALTER TABLE settings
    ADD CONSTRAINT settings_pkey PRIMARY KEY (key);
ALTER TABLE migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (id);
CREATE INDEX idx_upload_deleted_at ON uploads USING btree (deleted_at);
CREATE INDEX idx_upload_expire_at ON uploads USING btree (expire_at);
CREATE INDEX idx_upload_user ON uploads USING btree ("user");
CREATE INDEX idx_upload_user_token ON uploads USING btree (token);
ALTER TABLE tokens
    ADD CONSTRAINT fk_users_tokens FOREIGN KEY (user_id) REFERENCES users(id);
ALTER TABLE files
    ADD CONSTRAINT fk_uploads_files FOREIGN KEY (upload_id) REFERENCES uploads(id);
