// aiopt: build the command-line app and dispatch (the subcommands live in src/cli/).
#include "cli/app.hpp"

int main(int argc, char** argv) { return aiopt::cli::run(argc, argv); }
