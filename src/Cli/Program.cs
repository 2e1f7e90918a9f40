using System.CommandLine;
using Forensics.Cli;

return await ForensicsCommand.RunAsync(args);
