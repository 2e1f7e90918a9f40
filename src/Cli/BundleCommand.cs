using System.CommandLine;
using System.Globalization;
using Forensics.Query.Bundles;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics bundle REC -o FILE.fxb</c>: one verifiable file for a ticket (docs/bundles.md);
/// <c>forensics bundle FILE.fxb --append-note TEXT</c>: a custody note, chained and re-signed.
/// </summary>
public static class BundleCommand
{
    public static Command Build()
    {
        var input = new Argument<string>("recording") { Description = "a recording directory, or with --append-note a bundle file" };
        var output = new Option<string?>("--output", "-o") { Description = "the bundle file to write (conventionally NAME.fxb)" };
        var redact = new Option<string[]>("--redact-args") { Description = "regular expression over process arguments (exec.arguments); matches, or their capture groups, become *****; repeatable", AllowMultipleArgumentsPerToken = false };
        var dropEnv = new Option<bool>("--drop-env") { Description = "blank the value of every VAR=value argument and null any env column" };
        var anon = new Option<bool>("--anonymize-ips") { Description = "prefix-preserving (Crypto-PAn) anonymization of every IP column with a random key that is not kept" };
        var exclude = new Option<string[]>("--exclude") { Description = "leave a table out (drop, exec, connect, ...); repeatable" };
        var sign = new Option<string?>("--sign-key") { Description = "sign the bundle with this SSH key via ssh-keygen -Y sign -n forensics (private key, or .pub with the key in ssh-agent)" };
        var note = new Option<string?>("--append-note") { Description = "add a note to an existing bundle's custody log" };
        var cmd = new Command("bundle", "Pack a recording into one verifiable file for an incident ticket (.fxb: manifest, Parquet files, SHA-256 per file, root hash, custody log, optional SSH signature), with optional redaction")
        {
            input, output, redact, dropEnv, anon, exclude, sign, note,
        };
        cmd.SetAction(p => Run(new Args(
            p.GetValue(input)!, p.GetValue(output), p.GetValue(redact) ?? [], p.GetValue(dropEnv), p.GetValue(anon),
            p.GetValue(exclude) ?? [], p.GetValue(sign), p.GetValue(note))));
        return cmd;
    }

    private sealed record Args(string Input, string? Output, string[] RedactArgs, bool DropEnv, bool AnonymizeIps,
        string[] Exclude, string? SignKey, string? Note);

    private static int Run(Args a)
    {
        try
        {
            BundleResult r;
            if (a.Note is not null)
            {
                if (a.Output is not null || a.RedactArgs.Length > 0 || a.DropEnv || a.AnonymizeIps || a.Exclude.Length > 0)
                {
                    return Cli.Fail(ExitCode.Usage, "--append-note takes only a bundle file and optionally --sign-key");
                }
                if (!File.Exists(a.Input))
                {
                    return Cli.Fail(ExitCode.BadInput, $"{a.Input}: no such bundle file");
                }
                r = BundleWriter.AppendNote(a.Input, a.Note, a.SignKey);
                Console.WriteLine($"note added to {a.Input}: root {r.Root}{Signed(r)}");
                return (int)ExitCode.Ok;
            }
            if (a.Output is null)
            {
                return Cli.Fail(ExitCode.Usage, "give the bundle file to write with -o FILE.fxb");
            }
            if (!Directory.Exists(a.Input))
            {
                return Cli.Fail(ExitCode.BadInput, $"{a.Input}: not a recording directory");
            }
            foreach (var re in a.RedactArgs)
            {
                try
                {
                    _ = new System.Text.RegularExpressions.Regex(re);
                }
                catch (ArgumentException e)
                {
                    return Cli.Fail(ExitCode.Usage, $"--redact-args {re}: {e.Message}");
                }
            }
            r = BundleWriter.Create(a.Input, a.Output, new BundleOptions
            {
                RedactArgs = a.RedactArgs,
                DropEnv = a.DropEnv,
                AnonymizeIps = a.AnonymizeIps,
                Exclude = a.Exclude,
                SignKey = a.SignKey,
            });
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"bundle {a.Output}: {r.Files} files, {r.Bytes} bytes, root {r.Root}{Signed(r)}"));
            return (int)ExitCode.Ok;
        }
        catch (BundleException e)
        {
            return Cli.Fail((ExitCode)(int)e.Error, e.Message);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or FileNotFoundException)
        {
            return Cli.Fail(ExitCode.BadInput, e.Message);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or DuckDB.NET.Data.DuckDBException)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
    }

    private static string Signed(BundleResult r) =>
        r.Signature is null ? ", unsigned" : $", signed by {r.Signature.KeyType} {r.Signature.Fingerprint}";
}
