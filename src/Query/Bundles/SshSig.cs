using System.Buffers.Binary;
using System.Diagnostics;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;

namespace Forensics.Query.Bundles;

/// <summary>An SSH public key: its algorithm name and wire blob (RFC 4253 encoding).</summary>
public sealed record SshPublicKey(string Type, byte[] Blob)
{
    /// <summary>The fingerprint as ssh-keygen -l prints it: SHA256:base64-without-padding.</summary>
    public string Fingerprint => "SHA256:" + Convert.ToBase64String(SHA256.HashData(Blob)).TrimEnd('=');

    public bool SameKey(SshPublicKey other) => Blob.AsSpan().SequenceEqual(other.Blob);

    /// <summary>Parses "TYPE BASE64 [comment]" (an id_*.pub line).</summary>
    public static SshPublicKey ParseLine(string line)
    {
        var parts = line.Trim().Split((char[]?)null, 3, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length < 2)
        {
            throw new FormatException("not an SSH public key line");
        }
        return FromBlob(parts[0], Convert.FromBase64String(parts[1]));
    }

    public static SshPublicKey FromBlob(string? expectedType, byte[] blob)
    {
        var r = new SshReader(blob);
        var type = r.String();
        if (expectedType is not null && expectedType != type)
        {
            throw new FormatException($"key says {type}, line says {expectedType}");
        }
        return new SshPublicKey(type, blob);
    }
}

/// <summary>
/// SSHSIG signatures (OpenSSH PROTOCOL.sshsig), the format of <c>ssh-keygen -Y sign</c>.
/// A bundle's index.sig is the armored signature of index.json's bytes in namespace "forensics",
/// so <c>ssh-keygen -Y verify -n forensics -s index.sig &lt; index.json</c> accepts it too.
/// Verifies ssh-ed25519, ecdsa-sha2-nistp256/384/521 and rsa-sha2-256/512 keys in managed code.
/// </summary>
public sealed class SshSig
{
    public const string Namespace = "forensics";
    private const string Begin = "-----BEGIN SSH SIGNATURE-----";
    private const string End = "-----END SSH SIGNATURE-----";

    private SshSig(SshPublicKey key, string ns, byte[] reserved, string hashAlg, string sigType, byte[] sig)
    {
        Key = key;
        Ns = ns;
        Reserved = reserved;
        HashAlgorithm = hashAlg;
        SignatureType = sigType;
        Signature = sig;
    }

    public SshPublicKey Key { get; }
    public string Ns { get; }
    public string HashAlgorithm { get; }
    public string SignatureType { get; }
    private byte[] Reserved { get; }
    private byte[] Signature { get; }

    /// <summary>Parses an armored signature; the text must be exactly what ssh-keygen writes.</summary>
    public static SshSig Parse(byte[] armored)
    {
        string text;
        byte[] blob;
        try
        {
            text = new UTF8Encoding(false, true).GetString(armored);
            var lines = text.Split('\n');
            if (lines.Length < 4 || lines[0] != Begin || lines[^1] != "" || lines[^2] != End)
            {
                throw new FormatException("no SSH SIGNATURE armor");
            }
            blob = Convert.FromBase64String(string.Concat(lines[1..^2]));
        }
        catch (Exception e) when (e is FormatException or DecoderFallbackException)
        {
            throw new BundleException(BundleError.SignatureBad, "index.sig is not an SSH signature: " + e.Message);
        }
        if (!Armor(blob).AsSpan().SequenceEqual(armored))
        {
            throw new BundleException(BundleError.SignatureBad, "index.sig is not in canonical ssh-keygen armor");
        }
        try
        {
            var r = new SshReader(blob);
            if (!r.Raw(6).SequenceEqual("SSHSIG"u8.ToArray()))
            {
                throw new FormatException("bad magic");
            }
            if (r.UInt32() != 1)
            {
                throw new FormatException("unsupported version");
            }
            var key = SshPublicKey.FromBlob(null, r.Bytes());
            var ns = Encoding.UTF8.GetString(r.Bytes());
            var reserved = r.Bytes();
            var hash = Encoding.UTF8.GetString(r.Bytes());
            var sr = new SshReader(r.Bytes());
            r.End();
            var sigType = sr.String();
            var sig = sr.Bytes();
            sr.End();
            return new SshSig(key, ns, reserved, hash, sigType, sig);
        }
        catch (Exception e) when (e is FormatException or DecoderFallbackException or OverflowException or ArgumentException)
        {
            throw new BundleException(BundleError.SignatureBad, "index.sig is malformed: " + e.Message);
        }
    }

    /// <summary>True when this signature is valid for <paramref name="message"/> in namespace "forensics".</summary>
    public bool Verify(ReadOnlySpan<byte> message)
    {
        if (Ns != Namespace || Reserved.Length != 0)
        {
            return false;
        }
        byte[] digest = HashAlgorithm switch
        {
            "sha512" => SHA512.HashData(message),
            "sha256" => SHA256.HashData(message),
            _ => [],
        };
        if (digest.Length == 0)
        {
            return false;
        }
        using var w = new SshWriter();
        w.Raw("SSHSIG"u8);
        w.String(Ns);
        w.Bytes(Reserved);
        w.String(HashAlgorithm);
        w.Bytes(digest);
        var signed = w.ToArray();
        try
        {
            return VerifyRaw(Key, SignatureType, Signature, signed);
        }
        catch (Exception e) when (e is FormatException or CryptographicException or ArgumentException)
        {
            return false;
        }
    }

    private static bool VerifyRaw(SshPublicKey key, string sigType, byte[] sig, byte[] data)
    {
        var k = new SshReader(key.Blob);
        var type = k.String();
        switch (type)
        {
            case "ssh-ed25519" when sigType == "ssh-ed25519":
                {
                    var pk = k.Bytes();
                    k.End();
                    return Ed25519.Verify(pk, data, sig);
                }
            case "ssh-rsa" when sigType is "rsa-sha2-512" or "rsa-sha2-256":
                {
                    var e = k.MPInt();
                    var n = k.MPInt();
                    k.End();
                    using var rsa = RSA.Create();
                    rsa.ImportParameters(new RSAParameters { Exponent = e, Modulus = n });
                    var alg = sigType == "rsa-sha2-512" ? HashAlgorithmName.SHA512 : HashAlgorithmName.SHA256;
                    return rsa.VerifyData(data, sig, alg, RSASignaturePadding.Pkcs1);
                }
            case "ecdsa-sha2-nistp256" or "ecdsa-sha2-nistp384" or "ecdsa-sha2-nistp521" when sigType == type:
                {
                    var (curve, size, alg) = type switch
                    {
                        "ecdsa-sha2-nistp256" => (ECCurve.NamedCurves.nistP256, 32, HashAlgorithmName.SHA256),
                        "ecdsa-sha2-nistp384" => (ECCurve.NamedCurves.nistP384, 48, HashAlgorithmName.SHA384),
                        _ => (ECCurve.NamedCurves.nistP521, 66, HashAlgorithmName.SHA512),
                    };
                    k.String();
                    var q = k.Bytes();
                    k.End();
                    if (q.Length != 1 + 2 * size || q[0] != 4)
                    {
                        return false;
                    }
                    using var ec = ECDsa.Create(new ECParameters { Curve = curve, Q = new ECPoint { X = q[1..(1 + size)], Y = q[(1 + size)..] } });
                    var sr = new SshReader(sig);
                    var rr = Fixed(sr.MPInt(), size);
                    var ss = Fixed(sr.MPInt(), size);
                    sr.End();
                    return ec.VerifyData(data, (byte[])[.. rr, .. ss], alg);
                }
            default:
                return false;
        }
    }

    private static byte[] Fixed(byte[] v, int size)
    {
        var trimmed = v.AsSpan().TrimStart((byte)0);
        if (trimmed.Length > size)
        {
            throw new FormatException("ECDSA value too long");
        }
        var o = new byte[size];
        trimmed.CopyTo(o.AsSpan(size - trimmed.Length));
        return o;
    }

    /// <summary>The armor ssh-keygen writes: base64 in lines of 70 characters.</summary>
    public static byte[] Armor(byte[] blob)
    {
        var b64 = Convert.ToBase64String(blob);
        var sb = new StringBuilder(Begin).Append('\n');
        for (var i = 0; i < b64.Length; i += 70)
        {
            sb.Append(b64.AsSpan(i, Math.Min(70, b64.Length - i))).Append('\n');
        }
        sb.Append(End).Append('\n');
        return Encoding.ASCII.GetBytes(sb.ToString());
    }

    /// <summary>
    /// Signs <paramref name="message"/> with <c>ssh-keygen -Y sign -n forensics -f KEY</c>: the private
    /// key (or, for a .pub file, the agent) stays with ssh-keygen, which may ask for a passphrase.
    /// </summary>
    public static byte[] SignWithSshKeygen(byte[] message, string keyFile)
    {
        if (!File.Exists(keyFile))
        {
            throw new FileNotFoundException($"signing key {keyFile} not found", keyFile);
        }
        var full = Path.GetFullPath(keyFile);
        if (Recording.RegularFile.Kind(new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full) != Recording.RegularFile.Regular)
        {
            throw new ArgumentException($"signing key {keyFile} is not a regular file");
        }
        var psi = new ProcessStartInfo("ssh-keygen")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "-q", "-Y", "sign", "-n", Namespace, "-f", keyFile })
        {
            psi.ArgumentList.Add(a);
        }
        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InvalidOperationException("ssh-keygen did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("signing needs ssh-keygen (Debian package openssh-client): " + e.Message, e);
        }
        using (p)
        {
            var stdout = new MemoryStream();
            var outTask = p.StandardOutput.BaseStream.CopyToAsync(stdout);
            var errTask = p.StandardError.ReadToEndAsync();
            try
            {
                p.StandardInput.BaseStream.Write(message);
                p.StandardInput.Close();
            }
            catch (IOException)
            {
                // ssh-keygen stopped reading (a file that is not a key, a wrong passphrase): its exit code and message say why.
            }
            if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                p.Kill();
                throw new InvalidOperationException("ssh-keygen -Y sign did not finish within 5 minutes");
            }
            outTask.Wait();
            var err = errTask.Result.Trim();
            if (p.ExitCode != 0)
            {
                throw new InvalidOperationException($"ssh-keygen -Y sign failed ({p.ExitCode}): {err.ReplaceLineEndings(" ")}");
            }
            return stdout.ToArray();
        }
    }
}

/// <summary>Reads the SSH wire encoding (RFC 4251): uint32, string, mpint. Bounds-checked.</summary>
internal sealed class SshReader(byte[] data)
{
    private int _pos;

    public uint UInt32()
    {
        if (data.Length - _pos < 4)
        {
            throw new FormatException("truncated");
        }
        var v = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(_pos));
        _pos += 4;
        return v;
    }

    public byte[] Raw(int n)
    {
        if (n < 0 || data.Length - _pos < n)
        {
            throw new FormatException("truncated");
        }
        var v = data.AsSpan(_pos, n).ToArray();
        _pos += n;
        return v;
    }

    public byte[] Bytes()
    {
        var n = UInt32();
        return n > int.MaxValue ? throw new FormatException("length too large") : Raw((int)n);
    }

    public string String()
    {
        try
        {
            return new UTF8Encoding(false, true).GetString(Bytes());
        }
        catch (DecoderFallbackException e)
        {
            throw new FormatException("a string is not UTF-8", e);
        }
    }

    public byte[] MPInt()
    {
        var v = Bytes();
        return v.AsSpan().TrimStart((byte)0).ToArray();
    }

    public void End()
    {
        if (_pos != data.Length)
        {
            throw new FormatException("trailing bytes");
        }
    }
}

internal sealed class SshWriter : IDisposable
{
    private readonly MemoryStream _ms = new();

    public void Dispose() => _ms.Dispose();

    public void Raw(ReadOnlySpan<byte> b) => _ms.Write(b);

    public void Bytes(ReadOnlySpan<byte> b)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(len, (uint)b.Length);
        _ms.Write(len);
        _ms.Write(b);
    }

    public void String(string s) => Bytes(Encoding.UTF8.GetBytes(s));

    public byte[] ToArray() => _ms.ToArray();
}

/// <summary>Who the verifier trusts: an allowed_signers file (ssh-keygen format) and/or one public key.</summary>
public sealed class TrustedKeys
{
    private readonly List<(string Principals, SshPublicKey Key)> _keys = [];

    public bool IsEmpty => _keys.Count == 0;

    public static TrustedKeys Load(string? allowedSignersFile, string? publicKeyFile)
    {
        var t = new TrustedKeys();
        if (publicKeyFile is not null)
        {
            var line = File.ReadAllLines(publicKeyFile).FirstOrDefault(l => l.Trim().Length > 0 && !l.TrimStart().StartsWith('#'))
                ?? throw new FormatException($"{publicKeyFile}: no public key");
            var parts = line.Trim().Split((char[]?)null, 3, StringSplitOptions.RemoveEmptyEntries);
            t._keys.Add((parts.Length > 2 ? parts[2] : publicKeyFile, SshPublicKey.ParseLine(line)));
        }
        if (allowedSignersFile is not null)
        {
            var n = 0;
            foreach (var raw in File.ReadAllLines(allowedSignersFile))
            {
                n++;
                var line = raw.Trim();
                if (line.Length == 0 || line.StartsWith('#'))
                {
                    continue;
                }
                var f = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 3)
                {
                    throw new FormatException($"{allowedSignersFile}:{n}: expected 'principals [options] keytype key'");
                }
                var at = 1;
                if (!LooksLikeKeyType(f[1]))
                {
                    var options = f[1];
                    at = 2;
                    if (options.Contains("cert-authority", StringComparison.Ordinal))
                    {
                        continue; // certificates are not supported: such a line trusts nothing here
                    }
                    var nsOpt = options.Split(',').FirstOrDefault(o => o.StartsWith("namespaces=", StringComparison.Ordinal));
                    if (nsOpt is not null && !nsOpt["namespaces=".Length..].Trim('"').Split(',').Contains(SshSig.Namespace))
                    {
                        continue;
                    }
                }
                if (f.Length < at + 2)
                {
                    throw new FormatException($"{allowedSignersFile}:{n}: no key");
                }
                t._keys.Add((f[0], SshPublicKey.ParseLine(f[at] + " " + f[at + 1])));
            }
        }
        return t;
    }

    /// <summary>The principals trusting this key, or null when it is not trusted.</summary>
    public string? PrincipalsFor(SshPublicKey key) =>
        _keys.Where(k => k.Key.SameKey(key)).Select(k => k.Principals).FirstOrDefault();

    private static bool LooksLikeKeyType(string s) =>
        s.StartsWith("ssh-", StringComparison.Ordinal) || s.StartsWith("ecdsa-", StringComparison.Ordinal) || s.StartsWith("sk-", StringComparison.Ordinal);
}
