CREATE TABLE `users` (
  `id` varchar(256) NOT NULL,
  `provider` varchar(256) DEFAULT NULL,
  `login` varchar(256) DEFAULT NULL,
  `password` varchar(256) DEFAULT NULL,
  `name` varchar(256) DEFAULT NULL,
  `email` varchar(256) DEFAULT NULL,
  `profile_picture` varchar(256) DEFAULT NULL,
  `is_admin` tinyint(1) DEFAULT NULL,
  `max_file_size` bigint DEFAULT NULL,
  `max_user_size` bigint DEFAULT NULL,
  `max_ttl` bigint DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `tokens` (
  `token` varchar(256) NOT NULL,
  `comment` varchar(256) DEFAULT NULL,
  `user_id` varchar(256) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`token`),
  KEY `fk_users_tokens` (`user_id`),
  CONSTRAINT `fk_users_tokens` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `uploads` (
  `id` varchar(256) NOT NULL,
  `ttl` bigint DEFAULT NULL,
  `extend_ttl` tinyint(1) DEFAULT NULL,
  `remote_ip` varchar(256) DEFAULT NULL,
  `comments` varchar(256) DEFAULT NULL,
  `upload_token` varchar(256) DEFAULT NULL,
  `user` varchar(256) DEFAULT NULL,
  `token` varchar(256) DEFAULT NULL,
  `stream` tinyint(1) DEFAULT NULL,
  `one_shot` tinyint(1) DEFAULT NULL,
  `removable` tinyint(1) DEFAULT NULL,
  `protected_by_password` tinyint(1) DEFAULT NULL,
  `login` varchar(256) DEFAULT NULL,
  `password` varchar(256) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `deleted_at` datetime(3) DEFAULT NULL,
  `expire_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `idx_upload_user` (`user`),
  KEY `idx_upload_user_token` (`token`),
  KEY `idx_upload_deleted_at` (`deleted_at`),
  KEY `idx_upload_expire_at` (`expire_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `files` (
  `id` varchar(256) NOT NULL,
  `upload_id` varchar(256) DEFAULT NULL,
  `name` varchar(256) DEFAULT NULL,
  `status` varchar(256) DEFAULT NULL,
  `md5` varchar(256) DEFAULT NULL,
  `type` varchar(256) DEFAULT NULL,
  `size` bigint DEFAULT NULL,
  `reference` varchar(256) DEFAULT NULL,
  `backend_details` varchar(256) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `fk_uploads_files` (`upload_id`),
  CONSTRAINT `fk_uploads_files` FOREIGN KEY (`upload_id`) REFERENCES `uploads` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `settings` (
  `key` varchar(256) NOT NULL,
  `value` varchar(256) DEFAULT NULL,
  PRIMARY KEY (`key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `cli_auth_sessions` (
  `code` varchar(16) NOT NULL,
  `secret` varchar(64) DEFAULT NULL,
  `status` varchar(16) DEFAULT 'pending',
  `token` varchar(64) DEFAULT NULL,
  `created_at` datetime(3) DEFAULT NULL,
  `expires_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`code`),
  KEY `idx_cli_auth_sessions_expires_at` (`expires_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `migrations` (
  `id` varchar(255) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
