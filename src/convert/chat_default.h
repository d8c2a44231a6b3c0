/* chat_default.h: built-in chat templates for converted models that carry none (src/convert/chat_default.c). */
#ifndef FERRY_CHAT_DEFAULT_H
#define FERRY_CHAT_DEFAULT_H

/* The built-in template of an architecture (hparams.arch), NULL when it has none; *name names it in messages. */
const char *chat_default_of(const char *arch, const char **name);

#endif
