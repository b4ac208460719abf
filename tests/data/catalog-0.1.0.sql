PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE files (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	path TEXT NOT NULL, 
	size BIGINT NOT NULL, 
	mtime_ns BIGINT NOT NULL, 
	content_hash VARCHAR(64), 
	width INTEGER, 
	height INTEGER, 
	format VARCHAR(16), 
	status VARCHAR(8) NOT NULL, 
	error TEXT, 
	vector_id INTEGER, 
	captured_at DATETIME, 
	exif JSON, 
	indexed_at DATETIME NOT NULL, 
	UNIQUE (path)
);
INSERT INTO files VALUES(1,'/p/a.jpg',10,1,'hasha',32,32,'JPEG','ok',NULL,1,NULL,'null','2026-11-30 15:00:02.016832');
INSERT INTO files VALUES(2,'/p/b.jpg',10,1,'hashb',32,32,'JPEG','ok',NULL,2,NULL,'null','2026-11-30 15:00:02.016832');
INSERT INTO files VALUES(3,'/p/c.jpg',10,1,'hashc',32,32,'JPEG','ok',NULL,3,NULL,'null','2026-11-30 15:00:02.016832');
INSERT INTO files VALUES(5,'/p/bad.jpg',3,1,'hashbad',NULL,NULL,NULL,'error','cannot identify image file',NULL,NULL,NULL,'2026-11-30 15:00:02.032212');
CREATE TABLE ignored_pairs (
	hash_a VARCHAR(64) NOT NULL, 
	hash_b VARCHAR(64) NOT NULL, 
	PRIMARY KEY (hash_a, hash_b)
);
INSERT INTO ignored_pairs VALUES('hasha','hashb');
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO meta VALUES('generation','2');
INSERT INTO meta VALUES('catalogue','8980b043b42e4540a4fda6c6c4cc9528');
INSERT INTO meta VALUES('manifest',replace('{\n  "version": 1,\n  "created_at": "2026-11-30T15:00:02",\n  "model": {\n    "source": "test-model",\n    "identity": "model-a",\n    "input_size": [\n      32,\n      32\n    ],\n    "dim": 8,\n    "input_range": [\n      0.0,\n      1.0\n    ],\n    "has_labels": false,\n    "runtime": "tf"\n  },\n  "preprocessing": {\n    "color": "RGB",\n    "resize": "squash",\n    "resample": "bilinear-antialias",\n    "height": 32,\n    "width": 32,\n    "input_range": [\n      0.0,\n      1.0\n    ]\n  },\n  "dim": 8,\n  "metric": "cosine",\n  "labels": null,\n  "descriptor": "squash"\n}','\n',char(10)));
CREATE TABLE labels (
	file_id INTEGER NOT NULL, 
	rank INTEGER NOT NULL, 
	class_index INTEGER NOT NULL, 
	name TEXT NOT NULL, 
	score DOUBLE NOT NULL, 
	PRIMARY KEY (file_id, rank), 
	FOREIGN KEY(file_id) REFERENCES files (id) ON DELETE CASCADE
);
INSERT INTO labels VALUES(1,0,1,'tabby cat',0.9000000000000000222);
INSERT INTO labels VALUES(2,0,2,'golden retriever',0.8000000000000000444);
CREATE TABLE vectors (
	id INTEGER NOT NULL, 
	data BLOB NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(id) REFERENCES files (id) ON DELETE CASCADE
);
INSERT INTO vectors VALUES(1,X'c33d8a3d0e4091bd8c09b03e44ad663d393e93bec4c9463e3a38333f4f2a023f');
INSERT INTO vectors VALUES(2,X'af8d63be6e96ccbe508949be01ce553c42f33bbf347e8dbde96ec9be83c76cbe');
INSERT INTO vectors VALUES(3,X'e99489bec9e91fbe1d1c503e59c4033fb7f781bd52b62c3f1527a8bee7b6313e');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('files',5);
CREATE INDEX ix_files_content_hash ON files (content_hash);
CREATE INDEX ix_files_status ON files (status);
CREATE INDEX ix_labels_name ON labels (name);
CREATE VIEW errors AS
SELECT id, path, size, mtime_ns, error AS reason, indexed_at AS seen_at
FROM files WHERE status = 'error';
COMMIT;
