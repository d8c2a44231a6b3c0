/*
 * model_home.h: what `-m MODEL` may name, for every command that runs a model: a model.ferry directory
 * (used as is), a GGUF file (converted once into the model home, $FERRY_HOME or ~/.cache/ferry, and
 * reused there while the file keeps its size and modification time), or the NAME of a model in the model
 * home (`ferry list` shows them).
 *
 * The model home holds NAME.ferry (the converted model; NAME is the GGUF's file name without .gguf) and
 * NAME.source.json (the GGUF's real path, size and mtime it was made from). Conversion writes
 * NAME.ferry.tmp and renames it (src/convert/), then writes the stamp through a temporary name: a model
 * without its current stamp is converted again.
 */
#ifndef FERRY_MODEL_HOME_H
#define FERRY_MODEL_HOME_H

#include <stddef.h>

/* The model home's path into buf: $FERRY_HOME, else $HOME/.cache/ferry. 0, or -ENAMETOOLONG / -ENOENT
 * (no HOME). */
int model_home_dir(char *buf, size_t len);

/* model_home_dir, the directory made when missing. 0 or a negative errno. */
int model_home_make(char *buf, size_t len);

/* The model directory -m arg names, into path (len bytes), converting a GGUF file when its converted copy
 * is missing or stale (one line on stderr says so). 0, or 1 after printing one line naming arg. */
int model_home_resolve(const char *arg, char *path, size_t len);

#endif
