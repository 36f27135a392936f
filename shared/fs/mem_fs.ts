/**
 * An in-memory {@link Fs} for tests. It keeps permission bits like a POSIX file system
 * (new files 0o644, new directories 0o755, i.e. umask 022) but never enforces them.
 * No symlinks. Relative paths resolve against "/".
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../errors.ts";
import type { FileInfo, Fs, MkdirOptions, WriteOptions } from "./fs.ts";

interface FileNode {
  kind: "file";
  text: string;
  mode: number;
}

interface DirNode {
  kind: "dir";
  mode: number;
}

type Node = FileNode | DirNode;

/** Default mode of a file created without an explicit mode. */
const FILE_MODE = 0o644;
/** Default mode of a directory. */
const DIR_MODE = 0o755;

const encoder = new TextEncoder();

/**
 * A file system held in a Map. Starts with only "/" (and whatever `files` seeds).
 * Operations complete synchronously behind their promises, so calls apply in call order.
 */
export class MemFs implements Fs {
  #nodes = new Map<string, Node>([["/", { kind: "dir", mode: DIR_MODE }]]);

  /**
   * @param files optional seed: path → text, created with parents (files 0o644).
   */
  constructor(files: Record<string, string> = {}) {
    for (const [path, text] of Object.entries(files)) {
      const p = resolve(path);
      this.#mkdirp(posix.dirname(p));
      this.#nodes.set(p, { kind: "file", text, mode: FILE_MODE });
    }
  }

  readTextFile(path: string): Promise<string> {
    return attempt(() => {
      const node = this.#get("read", path);
      if (node.kind !== "file") throw new JwError("internal", `read ${path}: is a directory`);
      return node.text;
    });
  }

  writeTextFile(path: string, text: string, options: WriteOptions = {}): Promise<void> {
    return attempt(() => {
      const p = resolve(path);
      this.#parentDir("write", path);
      const node = this.#nodes.get(p);
      if (node?.kind === "dir") throw new JwError("internal", `write ${path}: is a directory`);
      const mode = options.mode ?? node?.mode ?? FILE_MODE;
      this.#nodes.set(p, { kind: "file", text, mode: mode & 0o7777 });
    });
  }

  mkdir(path: string, options: MkdirOptions = {}): Promise<void> {
    return attempt(() => {
      const p = resolve(path);
      if (options.recursive) return this.#mkdirp(p, path);
      this.#parentDir("mkdir", path);
      if (this.#nodes.has(p)) throw new JwError("internal", `mkdir ${path}: already exists`);
      this.#nodes.set(p, { kind: "dir", mode: DIR_MODE });
    });
  }

  stat(path: string): Promise<FileInfo> {
    return attempt(() => {
      const node = this.#get("stat", path);
      return {
        isFile: node.kind === "file",
        isDirectory: node.kind === "dir",
        mode: node.mode,
        size: node.kind === "file" ? encoder.encode(node.text).length : 0,
      };
    });
  }

  exists(path: string): Promise<boolean> {
    return Promise.resolve(this.#nodes.has(resolve(path)));
  }

  chmod(path: string, mode: number): Promise<void> {
    return attempt(() => {
      this.#get("chmod", path).mode = mode & 0o7777;
    });
  }

  /** Every path held (files and directories), sorted; for test assertions. */
  paths(): string[] {
    return [...this.#nodes.keys()].sort();
  }

  #get(op: string, path: string): Node {
    const node = this.#nodes.get(resolve(path));
    if (!node) throw new JwError("not_found", `${op} ${path}: no such file or directory`);
    return node;
  }

  #parentDir(op: string, path: string): void {
    const parent = this.#nodes.get(posix.dirname(resolve(path)));
    if (!parent) throw new JwError("not_found", `${op} ${path}: no such file or directory`);
    if (parent.kind !== "dir") throw new JwError("internal", `${op} ${path}: not a directory`);
  }

  #mkdirp(p: string, shown: string = p): void {
    const node = this.#nodes.get(p);
    if (node?.kind === "dir") return;
    if (node) throw new JwError("internal", `mkdir ${shown}: a file is in the way`);
    this.#mkdirp(posix.dirname(p), shown);
    this.#nodes.set(p, { kind: "dir", mode: DIR_MODE });
  }
}

function resolve(path: string): string {
  return posix.resolve("/", path);
}

function attempt<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}
