/* list: an intrusive, circular, doubly linked list (libuv's queue.h, Linux's list.h):
 * the links live inside the listed objects, so adding and removing allocate nothing and
 * take constant time. The list owns nothing; whoever inserts an object removes it. */
#ifndef MTLSD_LIST_H
#define MTLSD_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
  struct list_node *prev;
  struct list_node *next;
};

/* list_init makes |head| an empty list (or |node| an unlinked node). */
static inline void list_init(struct list_node *head) {
  head->prev = head;
  head->next = head;
}

static inline bool list_empty(const struct list_node *head) {
  return head->next == head;
}

/* list_insert_head links |node| at the front of |head|. */
static inline void list_insert_head(struct list_node *head, struct list_node *node) {
  node->next = head->next;
  node->prev = head;
  head->next->prev = node;
  head->next = node;
}

/* list_remove unlinks |node| and leaves it unlinked (removing it again is a no-op). */
static inline void list_remove(struct list_node *node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  list_init(node);
}

/* list_splice moves every node of |from| to the front of |to|, leaving |from| empty. */
static inline void list_splice(struct list_node *to, struct list_node *from) {
  if (list_empty(from)) {
    return;
  }
  struct list_node *first = from->next;
  struct list_node *last = from->prev;
  last->next = to->next;
  to->next->prev = last;
  to->next = first;
  first->prev = to;
  list_init(from);
}

/* LIST_ENTRY returns the object of type |type| whose member |member| is |node|. */
#define LIST_ENTRY(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

#endif
