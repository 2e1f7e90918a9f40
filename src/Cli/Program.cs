using System.CommandLine;
using Forensics.Cli;

return await Cli.RunAsync(args);
