/* ferry.h: the subcommands of the ferry binary. Each takes its own argv (argv[0] = subcommand name) and
 * returns the process exit code: 0 success, 1 failure (one line on stderr says why), 2 usage error. */
#ifndef FERRY_H
#define FERRY_H

#define FERRY_VERSION "0.1.0"

int ferry_convert(int argc, char **argv);
int ferry_run(int argc, char **argv);
int ferry_ppl(int argc, char **argv);
int ferry_kld(int argc, char **argv);
int ferry_imatrix(int argc, char **argv);
int ferry_batch(int argc, char **argv);
int ferry_serve(int argc, char **argv);
int ferry_inspect(int argc, char **argv);
int ferry_tokenize(int argc, char **argv);
int ferry_detokenize(int argc, char **argv);
int ferry_template(int argc, char **argv);
int ferry_synth(int argc, char **argv);
int ferry_chat(int argc, char **argv);
int ferry_list(int argc, char **argv);

#endif
