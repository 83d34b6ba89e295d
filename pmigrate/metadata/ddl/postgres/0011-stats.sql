CREATE TABLE users (
    id text NOT NULL,
    provider text,
    login text,
    password text,
    name text,
    email text,
    profile_picture text,
    theme text,
    language text,
    is_admin boolean,
    max_file_size bigint,
    max_user_size bigint,
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
    extend_ttl boolean,
    remote_ip text,
    comments text,
    e2ee text,
    upload_token text,
    "user" text,
    token text,
    stream boolean,
    one_shot boolean,
    removable boolean,
    protected_by_password boolean,
    login text,
    password text,
    download_count bigint,
    last_downloaded_at timestamp with time zone,
    downloaded_bytes bigint,
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
    is_text boolean,
    reference text,
    backend_details text,
    download_count bigint,
    last_downloaded_at timestamp with time zone,
    created_at timestamp with time zone
);
CREATE TABLE settings (
    key text NOT NULL,
    value text
);
CREATE TABLE cli_auth_sessions (
    code character varying(16) NOT NULL,
    secret character varying(64),
    status character varying(16) DEFAULT 'pending'::character varying,
    token character varying(64),
    created_at timestamp with time zone,
    expires_at timestamp with time zone
);
CREATE TABLE usage_stats (
    user_id character varying(256) DEFAULT ''::character varying NOT NULL,
    token character varying(256) DEFAULT ''::character varying NOT NULL,
    current_uploads bigint,
    current_files bigint,
    current_size bigint,
    lifetime_uploads bigint,
    lifetime_files bigint,
    lifetime_size bigint,
    downloads bigint,
    downloaded_bytes bigint,
    uploaded_bytes bigint,
    lifetime_users bigint,
    current_password_uploads bigint,
    lifetime_password_uploads bigint,
    current_removable_uploads bigint,
    lifetime_removable_uploads bigint,
    current_one_shot_uploads bigint,
    lifetime_one_shot_uploads bigint,
    current_stream_uploads bigint,
    lifetime_stream_uploads bigint,
    current_extend_ttl_uploads bigint,
    lifetime_extend_ttl_uploads bigint,
    current_e2ee_uploads bigint,
    lifetime_e2ee_uploads bigint,
    current_comment_uploads bigint,
    lifetime_comment_uploads bigint,
    current_ttl_none_uploads bigint,
    lifetime_ttl_none_uploads bigint,
    current_ttl_lt1h_uploads bigint,
    lifetime_ttl_lt1h_uploads bigint,
    current_ttl_1h1d_uploads bigint,
    lifetime_ttl_1h1d_uploads bigint,
    current_ttl_1d7d_uploads bigint,
    lifetime_ttl_1d7d_uploads bigint,
    current_ttl_7d30d_uploads bigint,
    lifetime_ttl_7d30d_uploads bigint,
    current_ttl_gt30d_uploads bigint,
    lifetime_ttl_gt30d_uploads bigint,
    current_file_size_lt1m_files bigint,
    lifetime_file_size_lt1m_files bigint,
    current_file_size_1m10m_files bigint,
    lifetime_file_size_1m10m_files bigint,
    current_file_size_10m100m_files bigint,
    lifetime_file_size_10m100m_files bigint,
    current_file_size_100m1g_files bigint,
    lifetime_file_size_100m1g_files bigint,
    current_file_size_1g10g_files bigint,
    lifetime_file_size_1g10g_files bigint,
    current_file_size_10g100g_files bigint,
    lifetime_file_size_10g100g_files bigint,
    current_file_size_gt100g_files bigint,
    lifetime_file_size_gt100g_files bigint,
    last_upload_at timestamp with time zone,
    started_at timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);
CREATE TABLE download_stats_daily (
    day timestamp with time zone NOT NULL,
    entity_type character varying(16) NOT NULL,
    entity_id character varying(256) NOT NULL,
    downloads bigint,
    bytes bigint,
    user_id character varying(256),
    token character varying(256),
    updated_at timestamp with time zone
);
CREATE TABLE upload_stats_daily (
    day timestamp with time zone NOT NULL,
    user_id character varying(256) NOT NULL,
    token character varying(256) NOT NULL,
    uploads bigint,
    bytes bigint,
    updated_at timestamp with time zone
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
ALTER TABLE cli_auth_sessions
    ADD CONSTRAINT cli_auth_sessions_pkey PRIMARY KEY (code);
ALTER TABLE usage_stats
    ADD CONSTRAINT usage_stats_pkey PRIMARY KEY (user_id, token);
ALTER TABLE download_stats_daily
    ADD CONSTRAINT download_stats_daily_pkey PRIMARY KEY (day, entity_type, entity_id);
ALTER TABLE upload_stats_daily
    ADD CONSTRAINT upload_stats_daily_pkey PRIMARY KEY (day, user_id, token);
ALTER TABLE migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (id);
CREATE INDEX idx_upload_deleted_at ON uploads USING btree (deleted_at);
CREATE INDEX idx_upload_download_count ON uploads USING btree (download_count);
CREATE INDEX idx_upload_downloaded_bytes ON uploads USING btree (downloaded_bytes);
CREATE INDEX idx_upload_expire_at ON uploads USING btree (expire_at);
CREATE INDEX idx_upload_user ON uploads USING btree ("user");
CREATE INDEX idx_upload_user_token ON uploads USING btree (token);
CREATE INDEX idx_file_upload_id ON files USING btree (upload_id);
CREATE INDEX idx_cli_auth_sessions_expires_at ON cli_auth_sessions USING btree (expires_at);
CREATE INDEX idx_usage_stats_token ON usage_stats USING btree (token);
CREATE INDEX idx_download_stats_daily_user_day ON download_stats_daily USING btree (user_id, day);
CREATE INDEX idx_upload_stats_daily_user_day ON upload_stats_daily USING btree (user_id, day);
ALTER TABLE tokens
    ADD CONSTRAINT fk_users_tokens FOREIGN KEY (user_id) REFERENCES users(id);
ALTER TABLE files
    ADD CONSTRAINT fk_uploads_files FOREIGN KEY (upload_id) REFERENCES uploads(id);
