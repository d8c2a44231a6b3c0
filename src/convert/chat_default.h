/* chat_default.h: built-in chat templates for converted models that carry none (src/convert/chat_default.c). */
#ifndef FERRY_CHAT_DEFAULT_H
#define FERRY_CHAT_DEFAULT_H

extern const char chat_default_gemma3[];

#endif
