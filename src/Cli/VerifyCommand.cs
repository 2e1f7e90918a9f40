using System.CommandLine;
using System.Globalization;
using Forensics.Format;
using Forensics.Query.Bundles;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics verify FILE</c>: exit 0 when the bundle is intact (and, with --key or
/// --allowed-signers, signed by a trusted key); otherwise one line and the exit code of the
/// failure class (<see cref="BundleError"/>, 10..23).
/// </summary>
public static class VerifyCommand
{
    public static Command Build()
    {
        var file = new Argument<string>("bundle") { Description = "a bundle file (.fxb)" };
        var allowed = new Option<string?>("--allowed-signers") { Description = "ssh-keygen allowed_signers file: the signature must be by one of its keys" };
        var key = new Option<string?>("--key") { Description = "an SSH public key file (id_ed25519.pub): the signature must be by this key" };
        var root = new Option<string?>("--root") { Description = "the root hash the bundle must have (as quoted in the ticket)" };
        var cmd = new Command("verify", "Verify a bundle: every file's SHA-256, the root hash, the manifest, the custody chain, the signature; exit 0 when intact, else a distinct code per failure class")
        {
            file, allowed, key, root,
        };
        cmd.SetAction(p => Run(p.GetValue(file)!, new VerifyOptions(p.GetValue(allowed), p.GetValue(key), p.GetValue(root))));
        return cmd;
    }

    private static int Run(string file, VerifyOptions options)
    {
        if (!File.Exists(file))
        {
            return Cli.Fail(ExitCode.BadInput, $"{file}: no such file");
        }
        try
        {
            var r = BundleReader.Verify(file, options);
            var sig = r.Signature switch
            {
                null => "unsigned",
                { TrustedAs: { } who } => $"signed by {r.Signature.KeyType} {r.Signature.Fingerprint} (trusted: {who})",
                _ => $"signed by {r.Signature.KeyType} {r.Signature.Fingerprint} (not checked against a trusted key: give --key or --allowed-signers)",
            };
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"ok: {file}: recording {r.Index.RecordingId}, {r.Index.Entries.Count} files, {r.DataBytes} bytes, root {r.Root}, {sig}"));
            foreach (var c in r.Custody)
            {
                var what = c.Action == "bundle" ? $"bundled {c.RecordingPath} ({c.RecordingId})" : $"note {BundleIndex.Quote(c.Note ?? "")}";
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  custody {c.Seq}: {c.At:yyyy-MM-ddTHH:mm:ssZ} {c.User} on {c.Host}: {what}"));
            }
            if (r.Manifest["redaction"] is System.Text.Json.Nodes.JsonObject red)
            {
                Console.WriteLine("  redacted: " + string.Join(", ", red.Select(p => p.Key).Where(k => k is not "redacted_at" and not "columns_rewritten")));
            }
            return (int)ExitCode.Ok;
        }
        catch (BundleException e)
        {
            return Cli.Fail((ExitCode)(int)e.Error, e.Message);
        }
        catch (ArgumentException e)
        {
            return Cli.Fail(ExitCode.BadInput, e.Message);
        }
    }
}
