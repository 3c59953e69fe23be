BEGIN TRANSACTION;
CREATE TABLE comparison_images (
	comparison_id INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	name VARCHAR NOT NULL, 
	PRIMARY KEY (comparison_id, position), 
	CONSTRAINT ck_comparison_images_position CHECK (position >= 0), 
	FOREIGN KEY(comparison_id) REFERENCES comparisons (id) ON DELETE CASCADE, 
	FOREIGN KEY(sha256) REFERENCES images (sha256)
);
INSERT INTO "comparison_images" VALUES(1,0,'442d8f2138d439a66266ec98ffba024f6da1b475fab0a5d5db0357468d27f971','red.png');
INSERT INTO "comparison_images" VALUES(2,0,'442d8f2138d439a66266ec98ffba024f6da1b475fab0a5d5db0357468d27f971','red.png');
CREATE TABLE comparisons (
	id INTEGER NOT NULL, 
	prompt TEXT NOT NULL, 
	params JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	rater VARCHAR NOT NULL, 
	blind BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "comparisons" VALUES(1,'What differs between them?','{"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}','2026-12-01 21:59:52.961240','ann',0);
INSERT INTO "comparisons" VALUES(2,'Blind one','{"max_new_tokens": 16, "temperature": 0.7, "top_p": 0.9, "seed": 3}','2026-12-01 21:59:52.985708','bob',1);
CREATE TABLE images (
	sha256 VARCHAR(64) NOT NULL, 
	original_name VARCHAR NOT NULL, 
	size_bytes INTEGER NOT NULL, 
	format VARCHAR NOT NULL, 
	width INTEGER NOT NULL, 
	height INTEGER NOT NULL, 
	first_seen DATETIME NOT NULL, 
	PRIMARY KEY (sha256), 
	CONSTRAINT ck_images_size CHECK (size_bytes >= 0), 
	CONSTRAINT ck_images_dims CHECK (width > 0 AND height > 0)
);
INSERT INTO "images" VALUES('442d8f2138d439a66266ec98ffba024f6da1b475fab0a5d5db0357468d27f971','red.png',77,'PNG',4,3,'2026-12-01 21:59:52.966052');
CREATE TABLE measured_sizes (
	model VARCHAR NOT NULL, 
	measured_gb FLOAT NOT NULL, 
	measured_at DATETIME NOT NULL, 
	PRIMARY KEY (model)
);
INSERT INTO "measured_sizes" VALUES('qwen2-vl-2b',5.25,'2026-12-01 21:59:52.992283');
CREATE TABLE outputs (
	id INTEGER NOT NULL, 
	comparison_id INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	model VARCHAR NOT NULL, 
	repo VARCHAR NOT NULL, 
	revision VARCHAR NOT NULL, 
	backend VARCHAR NOT NULL, 
	runtime VARCHAR NOT NULL, 
	transformers_version VARCHAR, 
	dtype VARCHAR, 
	seed INTEGER, 
	params JSON NOT NULL, 
	image_note TEXT, 
	status VARCHAR NOT NULL, 
	text TEXT NOT NULL, 
	error TEXT, 
	ttft_s FLOAT, 
	total_s FLOAT, 
	prompt_tokens INTEGER, 
	tokens INTEGER, 
	tokens_per_s FLOAT, 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_outputs_position UNIQUE (comparison_id, position), 
	CONSTRAINT ck_outputs_status CHECK (status IN ('queued', 'loading', 'generating', 'done', 'error', 'interrupted')), 
	CONSTRAINT ck_outputs_backend CHECK (backend IN ('local', 'remote')), 
	FOREIGN KEY(comparison_id) REFERENCES comparisons (id) ON DELETE CASCADE
);
INSERT INTO "outputs" VALUES(1,1,0,'qwen2-vl-2b','Qwen/Qwen2-VL-2B-Instruct','main','local','default',NULL,NULL,NULL,'{"max_new_tokens": 64}',NULL,'done','A red square.',NULL,0.1,0.5,30,4,8.0,'2026-12-01 21:59:52.968002','2026-12-01 21:59:52.972490');
INSERT INTO "outputs" VALUES(2,1,1,'smolvlm-instruct','HuggingFaceTB/SmolVLM-Instruct','main','local','default',NULL,NULL,NULL,'{}',NULL,'error','','out of memory',NULL,NULL,NULL,NULL,NULL,'2026-12-01 21:59:52.968181','2026-12-01 21:59:52.975373');
INSERT INTO "outputs" VALUES(3,2,0,'llava-1.5-7b','llava-hf/llava-1.5-7b-hf','','local','default',NULL,NULL,NULL,'{}',NULL,'generating','',NULL,NULL,NULL,NULL,NULL,NULL,'2026-12-01 21:59:52.986950',NULL);
CREATE TABLE ratings (
	id INTEGER NOT NULL, 
	output_id INTEGER NOT NULL, 
	score INTEGER NOT NULL, 
	note TEXT NOT NULL, 
	rater VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_ratings_output_rater UNIQUE (output_id, rater), 
	CONSTRAINT ck_ratings_score CHECK (score BETWEEN 1 AND 5), 
	FOREIGN KEY(output_id) REFERENCES outputs (id) ON DELETE CASCADE
);
INSERT INTO "ratings" VALUES(1,1,4,'good, brief','ann','2026-12-01 21:59:52.980705','2026-12-01 21:59:52.980717');
INSERT INTO "ratings" VALUES(2,1,2,'','bob','2026-12-01 21:59:52.984065','2026-12-01 21:59:52.984077');
CREATE INDEX ix_comparisons_created_at ON comparisons (created_at);
CREATE INDEX ix_comparison_images_sha256 ON comparison_images (sha256);
CREATE INDEX ix_outputs_model ON outputs (model);
CREATE INDEX ix_ratings_updated_at ON ratings (updated_at);
COMMIT;
